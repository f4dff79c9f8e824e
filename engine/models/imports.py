"""Published Cityscapes checkpoints into models of ours (`python -m engine import-checkpoint`).

Two formats, each a state dict whose keys are renamed onto ours (the weights are not changed):
- "hrnet-official": HRNet-Semantic-Segmentation's HRNetV2-W48 (`hrnet_cs_8090_torch11.pth`): the
  state dict of its FullModel (`model.` + `loss.`). The backbone's names are timm's (our `backbone.`);
  its head `last_layer` = [Conv2d 720->720 with bias, BatchNorm2d, ReLU, Conv2d 720->19]. Ours has no
  bias on that conv: it is folded into the BatchNorm (running_mean - bias, exact in eval mode). The
  loss's class weights (`loss.criterion.weight`) are dropped.
- "mmseg": mmsegmentation's `{"meta", "state_dict"}`, the model told by its keys: FCN-HRNetV2p-W48
  (`decode_head.convs.0`) -> hrnetv2_w48; DeepLabV3 R-50b/R-101b-D8 (`decode_head.aspp_modules`; 6 or
  23 `backbone.layer3` blocks) -> deeplabv3_r50/r101 with head "mmseg", dropout 0.1 and the FCN
  auxiliary head. mmcv's ConvModule names its parts `conv` and `bn`; the backbones' names equal ours.
A missing `num_batches_tracked` (a counter eval mode never reads) is filled with 0; any other missing,
unexpected or mis-shaped key is one ImportCheckpointError naming them all, before the strict load.

The result is an ordinary checkpoint of ours, `<weights>/<NAME>/best.pt`, whose recipe is its family's
`reference` profile (evaluated on the whole 2048x1024 image, as the published figures), recorded as a
completed run of profile "imported" whose `source` says where the weights came from.
"""
from __future__ import annotations

import pickle
import re
import uuid
import warnings
from pathlib import Path

import torch

from engine import checkpoints
from engine.config import list_variants, load_recipe, validate
from engine.errors import UserError

from . import BACKBONES, build_model

FORMATS = ("hrnet-official", "mmseg")
SHOWN = 20  # keys listed in an error, per kind


class ImportCheckpointError(UserError, ValueError):
    """A file that cannot be imported: unreadable, pickled objects, another format, keys that do not match."""


# (prefix in the file, prefix in our model): the longest matching prefix renames a key (read backwards for messages)
HRNET_OFFICIAL = (("model.", "backbone."),  # seg_hrnet.py's HighResolutionNet: timm's hrnet_w48 names
                  *((f"model.last_layer.{i}.", f"classifier.{i}.") for i in (0, 1, 3)))  # [conv, bn, relu, conv]
MMSEG_HRNET = (("backbone.", "backbone."), ("decode_head.convs.0.conv.", "classifier.0."),
               ("decode_head.convs.0.bn.", "classifier.1."), ("decode_head.conv_seg.", "classifier.3."))
MMSEG_DEEPLAB = (("backbone.", "backbone."),
                 ("decode_head.image_pool.1.conv.", "classifier.0.image_pool.1.0."),
                 ("decode_head.image_pool.1.bn.", "classifier.0.image_pool.1.1."),
                 *((f"decode_head.aspp_modules.{i}.{part}.", f"classifier.0.aspp.{i}.{j}.")
                   for i in range(4) for j, part in enumerate(("conv", "bn"))),
                 ("decode_head.bottleneck.conv.", "classifier.0.bottleneck.0."),
                 ("decode_head.bottleneck.bn.", "classifier.0.bottleneck.1."),
                 ("decode_head.conv_seg.", "classifier.2."),  # [ASPPHead, Dropout2d(0.1), conv]
                 ("auxiliary_head.convs.0.conv.", "aux_classifier.0."),
                 ("auxiliary_head.convs.0.bn.", "aux_classifier.1."),
                 ("auxiliary_head.conv_seg.", "aux_classifier.4."))  # torchvision's FCNHead: [conv, bn, relu, drop, conv]
RULES = {("hrnet-official", "hrnetv2_w48"): HRNET_OFFICIAL, ("mmseg", "hrnetv2_w48"): MMSEG_HRNET,
         ("mmseg", "deeplabv3_r50"): MMSEG_DEEPLAB, ("mmseg", "deeplabv3_r101"): MMSEG_DEEPLAB}
DROPPED = ("loss.", "decode_head.loss_decode.", "auxiliary_head.loss_decode.")  # loss buffers, not the model's
RESNET_DEPTH = {6: "deeplabv3_r50", 23: "deeplabv3_r101"}  # backbone.layer3 blocks -> arch


def _rename(key: str, rules) -> str | None:
    best = max((r for r in rules if key.startswith(r[0])), key=lambda r: len(r[0]), default=None)
    return None if best is None else best[1] + key[len(best[0]):]


def _source_name(key: str, rules) -> str:
    """Our key's name in the file (the rules read backwards), for the messages."""
    back = _rename(key, [(ours, theirs) for theirs, ours in rules])
    return back or key


def _listed(keys: list[str]) -> str:
    more = f" and {len(keys) - SHOWN} more" if len(keys) > SHOWN else ""
    return ", ".join(keys[:SHOWN]) + more


def _sample(state: dict, n: int = 4) -> str:
    return ", ".join(list(state)[:n]) + (", ..." if len(state) > n else "")


def read_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The file's state dict (unwrapped from {"state_dict": ...}; a DataParallel `module.` prefix
    removed), read as data only."""
    path = Path(path)
    if not path.is_file():
        raise ImportCheckpointError(f"no file at {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        what = re.search(r"GLOBAL [\w.]+", str(e))
        if what is None:  # no object refused: not a pickle of a checkpoint at all (a text file, a corrupt one)
            why = re.search(r"Unsupported operand \d+|invalid load key[^\n]*", str(e))
            raise ImportCheckpointError(f"{path}: not a PyTorch checkpoint ({why.group(0) if why else 'unreadable'})"
                                        ) from None
        raise ImportCheckpointError(
            f"{path}: refused to load: besides tensors it pickles Python objects "
            f"({what.group(0)}; mmsegmentation's `meta` often does), which could run "
            f"code when unpickled, so it is only read as data (torch.load weights_only=True). If you trust the file, "
            f"re-save its state dict alone and import that: python -c \"import torch; c = torch.load('{path}', "
            f"map_location='cpu', weights_only=False); torch.save(c.get('state_dict', c), '{path.stem}-weights.pth')\""
        ) from None
    except Exception as e:  # not a torch file, truncated...
        text = str(e).splitlines()[0] if str(e) else "the file ends early"
        raise ImportCheckpointError(f"{path}: not a loadable PyTorch file ({type(e).__name__}: {text})") from None
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else obj
    if not isinstance(state, dict) or not state or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        found = type(state).__name__ if not isinstance(state, dict) else f"keys {_sample(state)}"
        raise ImportCheckpointError(f"{path}: not a state dict of tensors (found {found})")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return dict(state)


def _detect_mmseg(state: dict) -> tuple[str, dict]:
    keys = list(state)
    if any(k.startswith("decode_head.aspp_modules.") for k in keys):
        if any(k.startswith("backbone.stem.") for k in keys):
            raise ImportCheckpointError(
                "an mmsegmentation DeepLabV3 with a ResNetV1c backbone (deep stem, `backbone.stem.*`: the R-50-D8 / "
                "R-101-D8 models); ours uses torchvision's ResNet, as mmsegmentation's R-50b-D8 / R-101b-D8 checkpoints do")
        blocks = len({k.split(".")[2] for k in keys if k.startswith("backbone.layer3.")})
        if blocks not in RESNET_DEPTH:
            raise ImportCheckpointError(f"an mmsegmentation DeepLabV3 whose ResNet has {blocks} blocks in layer3; "
                                        "ours: 6 (R-50b) or 23 (R-101b)")
        return RESNET_DEPTH[blocks], {"head": "mmseg", "dropout": 0.1, "aux_loss": True}
    if "decode_head.convs.0.conv.weight" in state and any(k.startswith("backbone.stage4.") for k in keys):
        width = state["decode_head.convs.0.conv.weight"].shape[0]
        if width != 720:
            raise ImportCheckpointError(f"an mmsegmentation FCN-HRNetV2 with {width} head channels; ours is "
                                        "HRNetV2-W48 (48+96+192+384 = 720)")
        return "hrnetv2_w48", {"head": None, "dropout": 0.0, "aux_loss": False}
    heads = sorted({".".join(k.split(".")[:2]) for k in keys if k.startswith(("decode_head.", "auxiliary_head."))})
    hint = f"decode head keys {', '.join(heads[:6])}" if heads else f"keys {_sample(state)}"
    if any(k.startswith("model.") for k in keys):
        hint += "; keys under `model.` are the official HRNet's layout: --format hrnet-official"
    raise ImportCheckpointError(
        f"not an mmsegmentation checkpoint of a model we can import ({hint}); known: FCN-HRNetV2p-W48 "
        "(decode_head.convs.0, backbone.stage4) and DeepLabV3 R-50b/R-101b-D8 (decode_head.aspp_modules)")


def _layout(state: dict, fmt: str) -> tuple[str, dict]:
    """(arch, model settings) of a file of format `fmt`."""
    if fmt not in FORMATS:
        raise ImportCheckpointError(f"unknown format {fmt!r}; formats: {', '.join(FORMATS)}")
    if fmt == "mmseg":
        return _detect_mmseg(state)
    if not any(k.startswith("model.last_layer.") for k in state):
        hint = ("its keys are mmsegmentation's (backbone., decode_head.): --format mmseg"
                if any(k.startswith("decode_head.") for k in state) else f"found keys {_sample(state)}")
        raise ImportCheckpointError(f"not an official HRNet-Semantic-Segmentation checkpoint (keys under "
                                    f"`model.`, head `model.last_layer`): {hint}")
    return "hrnetv2_w48", {"head": None, "dropout": 0.0, "aux_loss": False}


def convert(state: dict, fmt: str) -> tuple[str, dict[str, torch.Tensor], dict]:
    """A published state dict in our names: (arch, state dict, model settings {head, dropout, aux_loss}).
    Keys no rule renames keep their name (`check_keys` reports them); loss buffers are dropped; the
    official HRNet's head conv bias is folded into its BatchNorm's running mean."""
    arch, settings = _layout(state, fmt)
    rules = RULES[fmt, arch]
    out = {}
    for key, value in state.items():
        if not key.startswith(DROPPED):
            out[_rename(key, rules) or key] = value
    if fmt == "hrnet-official" and "classifier.0.bias" in out and "classifier.1.running_mean" in out:
        # BN(Wx + b) = BN'(Wx) with running_mean' = running_mean - b (eval mode normalises with the running statistics)
        mean = out["classifier.1.running_mean"]
        out["classifier.1.running_mean"] = mean - out.pop("classifier.0.bias").to(mean)
    return arch, out, settings


def check_keys(model: torch.nn.Module, state: dict, fmt: str, arch: str, where: str) -> dict:
    """`state` with the `num_batches_tracked` counters it lacks set to 0; an ImportCheckpointError naming
    every missing, unexpected and mis-shaped key (in the file's names) otherwise."""
    rules, expected = RULES[fmt, arch], model.state_dict()
    state = dict(state)
    for key in expected.keys() - state.keys():
        if key.endswith(".num_batches_tracked"):
            state[key] = torch.zeros((), dtype=torch.long)
    missing = [_source_name(k, rules) for k in expected if k not in state]
    unexpected = [_source_name(k, rules) for k in state if k not in expected]
    shapes = [f"{_source_name(k, rules)} {tuple(v.shape)} vs ours {tuple(expected[k].shape)}"
              for k, v in state.items() if k in expected and v.shape != expected[k].shape]
    problems = [f"{len(keys)} {what} ({_listed(keys)})" for what, keys in
                (("missing", missing), ("unexpected", unexpected), ("mis-shaped", shapes)) if keys]
    if problems:
        raise ImportCheckpointError(f"{where} does not match our {arch}: " + "; ".join(problems))
    return state


def _reference_recipe(arch: str, name: str, fmt: str, file: str, settings: dict):
    """The `reference` profile of a variant of `arch`'s family, as NAME, with the converted model settings."""
    variant = next((v for v in list_variants() if load_recipe(v).model.arch == arch), None)
    if variant is None:
        raise ImportCheckpointError(f"no variant in training/ has arch {arch}: nothing to take its reference recipe from")
    recipe = load_recipe(variant, "reference")
    recipe.name, recipe.profile = name, "imported"
    recipe.description = f"Imported from {fmt} checkpoint {file}"
    for key, value in settings.items():
        setattr(recipe.model, key, value)
    return validate(recipe, f"{name} (imported, the reference recipe of {variant})")


def _existing(path: Path, name: str, source_sha: str, store) -> dict | None:
    """The earlier import of the same file under NAME (None: nothing there yet); an error when NAME is taken."""
    runs = [r for r in store.runs() if r["variant"] == name] if store is not None else []
    if not path.is_file():
        if runs:
            raise ImportCheckpointError(f"the store already has {len(runs)} run(s) named {name} (no checkpoint at "
                                        f"{path}); choose another --name")
        return None
    ckpt = checkpoints.load(path)
    had = ckpt.get("imported") or {}
    if had.get("sha256") != source_sha:
        what = (f"a model imported from {had.get('file')} (sha256 {str(had.get('sha256'))[:12]}…)" if had
                else "a model of ours")
        raise ImportCheckpointError(f"{path} already holds {what}; choose another --name")
    run = next((r for r in runs if (r.get("source") or {}).get("sha256") == source_sha), None)
    return {"checkpoint": str(path), "sha256": checkpoints.sha256(path), "source_sha256": source_sha,
            "arch": ckpt["arch"], "run_id": run["id"] if run else None, "already_imported": True}


def import_checkpoint(path, fmt: str, name: str, *, published_miou: float | None = None, source_url: str | None = None,
                      store=None, weights_dir=None) -> dict:
    """Convert the published checkpoint at `path` (format `fmt`) into `<weights_dir>/<name>/best.pt`,
    recorded in `store` as a completed run of profile "imported". Returns {checkpoint, sha256 (ours),
    source_sha256 (the file's), arch, run_id, already_imported}; importing the same file under the same
    name again changes nothing (already_imported True)."""
    path = Path(path)
    if fmt not in FORMATS:
        raise ImportCheckpointError(f"unknown format {fmt!r}; formats: {', '.join(FORMATS)}")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}", name):
        raise ImportCheckpointError(f"--name {name!r}: use letters, digits and _ . + - (it names a folder)")
    if name in list_variants():
        raise ImportCheckpointError(f"--name {name!r} is a variant of training/; choose another name")
    if published_miou is not None and not 0 < published_miou <= 1:
        raise ImportCheckpointError(f"--published-miou must be a fraction in (0, 1] (79.3% is 0.793), got {published_miou}")
    if not path.is_file():
        raise ImportCheckpointError(f"no file at {path}")
    source_sha = checkpoints.sha256(path)
    target = checkpoints.variant_dir(name, weights_dir) / "best.pt"
    earlier = _existing(target, name, source_sha, store)
    if earlier is not None:
        return earlier
    arch, state, settings = convert(read_state(path), fmt)
    with torch.device("meta"):  # the architecture alone (no initialisation): the file's tensors become its weights
        model = build_model(arch, dropout=settings["dropout"], aux_loss=settings["aux_loss"], head=settings["head"])
    state = {k: v.float() if v.is_floating_point() else v for k, v in check_keys(model, state, fmt, arch,
                                                                                   f"{path} ({fmt})").items()}
    model.load_state_dict(state, strict=True, assign=True)
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    assert not left, f"not loaded: {left[:5]}"  # every tensor of our models is in its state dict
    recipe = _reference_recipe(arch, name, fmt, path.name, settings)
    source = {"format": fmt, "file": path.name, "sha256": source_sha, "url": source_url,
              "published_miou": published_miou}
    uid, run_id = uuid.uuid4().hex, None
    if store is not None:
        run_id = store.start_run(variant=name, arch=arch, backbone=BACKBONES[arch], profile="imported",
                                 hyperparameters=recipe.to_dict(), dataset="cityscapes", data_root="", train_images=0,
                                 val_images=0, device="", code_version=checkpoints.code_version(), uid=uid,
                                 source=source)
    try:
        digest = checkpoints.save(target, model.state_dict(), arch=arch, recipe=recipe.to_dict(), run_uid=uid, epoch=0,
                                  iteration=0, metrics={}, extra={"imported": source}, store=store, run_id=run_id)
    except BaseException as e:
        if store is not None:
            store.finish_run(run_id, status="failed", error=f"{type(e).__name__}: {e}", train_seconds=0)
        raise
    if store is not None:
        store.finish_run(run_id, status="completed", checkpoint=str(target), train_seconds=0)
    return {"checkpoint": str(target), "sha256": digest, "source_sha256": source_sha, "arch": arch, "run_id": run_id,
            "already_imported": False}
