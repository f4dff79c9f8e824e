"""`python -m engine compress`: a trained model as it will be deployed - pruned, INT8, or both.

- prune: structured channel pruning with Torch-Pruning (DepGraph): its dependency graph keeps
  residual additions, concatenations and the heads consistent; the classifiers' 19 outputs are
  never pruned, and every pruned layer keeps a multiple of `ROUND_TO` channels. The `ratio` is the
  share of FLOPs removed (measured at the recipe's evaluation size, at most `FLOPS_SIZE`): channels
  are removed in small uniform steps (the same share in every layer, ranked by L1 norm or by first-
  order Taylor importance) until the FLOPs are at most (1 - ratio) of the parent's. The pruned model
  (`pruned.pt`, evaluated before fine-tuning) is then fine-tuned with the parent's own recipe for
  `finetune_iters` iterations: a training run like any other (progress, epoch rows, --resume).
- int8: post-training static quantization with ONNX Runtime (QOperator: QLinearConv, activations
  uint8 and weights int8 per channel, MinMax ranges from `calibration_images` training images, at
  `calibration_size`: the resolution it will run at, by default the recipe's evaluation size) after
  its `quant_pre_process`; the classifiers' last convolutions stay in float. The graph is kept inside
  the checkpoint (`engine.checkpoints`), tied to its parent's sha256 and its own.
- prune+int8: both, in that order; both models are kept.

Each derived model is a model like any other: `weights/<parent>+prune0.5/best.pt` (or `+int8`,
`+prune0.5+int8`), a run in the store linked to its parent's, evaluated and profiled as every run,
and usable as `--variant` wherever a variant is taken.
"""
from __future__ import annotations

import copy
import hashlib
import itertools
import logging
import math
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from engine import checkpoints, evaluate
from engine.config import recipe_from_dict
from engine.data.cityscapes import CityscapesDataset
from engine.data.transforms import EvalTransform, TrainTransform, eval_collate
from engine.errors import UserError
from engine.losses import SegmentationLoss
from engine.models import BACKBONES
from engine.models.pruned import layer_channels
from engine.profiling import device_name, gflops
from engine.runtime import select_device
from engine.train import train

METHODS = ("prune", "int8", "prune+int8")
IMPORTANCES = ("l1", "taylor")
ROUND_TO = 8                 # channels kept per pruned layer: a multiple of the int8/bf16 kernels' width
MAX_CHANNEL_RATIO = 0.9      # the most channels any layer loses
PRUNE_STEPS = 60             # steps from 0 to MAX_CHANNEL_RATIO; the FLOPs are measured after each
FLOPS_SIZE = (512, 256)      # the FLOPs that `ratio` refers to: at the eval size, or at most this
TAYLOR_BATCHES = 2           # training batches whose gradients rank channels before each step (taylor)
DEFAULT_CALIBRATION_IMAGES = 32
AGREEMENT_IMAGES = 8         # val images on which an INT8 model's labels are compared with its parent's


class CompressError(UserError, RuntimeError):
    pass


def derived_name(parent: str, method: str, ratio: float | None = None) -> str:
    """`deeplabv3_r50_adam+prune0.5`, `deeplabv3_r50_adam+int8`."""
    return f"{parent}+prune{ratio:g}" if method == "prune" else f"{parent}+{method}"


@dataclass
class Parent:
    """The model a derived one is made from: its name, file, checkpoint and run (None when not in the store)."""
    name: str
    path: Path
    ckpt: dict
    sha256: str
    run: dict | None

    @property
    def recipe(self) -> dict:
        return self.ckpt["recipe"]

    @property
    def eval_size(self) -> tuple[int, int]:
        data = self.recipe["data"]
        return tuple(data.get("eval_size") or data["size"])

    def lineage(self, method: str, **settings) -> dict:
        """The `derived` section of a derived model's checkpoint (also its run's `derivation`)."""
        return {"method": method, "parent": self.name, "parent_checkpoint": str(self.path),
                "parent_sha256": self.sha256, "parent_run_uid": self.ckpt.get("run_uid"), **settings}


def load_parent(*, variant=None, checkpoint=None, weights_dir=None, store=None) -> Parent:
    path = checkpoints.resolve(variant, checkpoint, weights_dir)
    ckpt, sha = checkpoints.load_with_sha256(path, store=store)
    run = store.run_by_uid(ckpt.get("run_uid")) if store is not None and ckpt.get("run_uid") else None
    return Parent(variant or ckpt["recipe"]["name"], Path(path), ckpt, sha, run)


def classifier_convs(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The last conv of each head (19 outputs): never pruned, kept in float when quantizing."""
    heads = [getattr(model, "classifier", None), getattr(model, "aux_classifier", None)]
    return [h[-1] for h in heads if h is not None]


def _flops_size(eval_size: tuple[int, int]) -> tuple[int, int]:
    w, h = eval_size
    scale = min(1.0, FLOPS_SIZE[0] / w, FLOPS_SIZE[1] / h)
    return max(32, round(w * scale)), max(32, round(h * scale))


def prune(model: torch.nn.Module, ratio: float, size: tuple[int, int], *, importance: str = "l1",
          grad_batches=None, loss_fn=None) -> dict:
    """Prune `model` in place until its FLOPs at `size` (W, H) are at most (1 - ratio) of what they were.
    `taylor` importance needs `grad_batches` [(images, targets)] and `loss_fn(outputs, targets)`.
    Returns the figures: gflops before and after (at `size`), the share of channels removed, steps."""
    import torch_pruning as tp

    if not 0.0 <= ratio < 1.0:
        raise CompressError(f"--ratio must be in [0, 1), got {ratio}")
    if importance not in IMPORTANCES:
        raise CompressError(f"--importance must be one of {IMPORTANCES}, got {importance!r}")
    model.eval()
    dev = next(model.parameters()).device
    before = gflops(model, size)
    target, steps, after = (1.0 - ratio) * before, 0, before
    if ratio > 0:
        imp = tp.importance.GroupMagnitudeImportance(p=1) if importance == "l1" else tp.importance.GroupTaylorImportance()
        example = torch.zeros(1, 3, size[1], size[0], device=dev)
        pruner = tp.pruner.BasePruner(model, example, importance=imp, pruning_ratio=MAX_CHANNEL_RATIO,
                                      iterative_steps=PRUNE_STEPS, ignored_layers=classifier_convs(model),
                                      round_to=ROUND_TO,
                                      output_transform=lambda out: sum(v.sum() for v in out.values()))
        while after > target:
            if steps == PRUNE_STEPS:
                raise CompressError(f"removing {MAX_CHANNEL_RATIO:.0%} of every layer's channels leaves "
                                    f"{after / before:.0%} of the FLOPs, not {1 - ratio:.0%}: use a smaller --ratio")
            if importance == "taylor":
                _accumulate_gradients(model, grad_batches, loss_fn)
            pruner.step()
            steps += 1
            after = gflops(model, size)
        model.zero_grad(set_to_none=True)
    return {"gflops_before": before, "gflops_after": after, "flops_ratio": after / before,
            "channel_ratio": MAX_CHANNEL_RATIO * steps / PRUNE_STEPS, "steps": steps, "flops_size": list(size)}


def _accumulate_gradients(model, batches, loss_fn) -> None:
    if not batches or loss_fn is None:
        raise CompressError("taylor importance needs training batches and a loss")
    model.zero_grad(set_to_none=True)
    with torch.enable_grad():
        for images, targets in batches:
            loss_fn(model(images), targets).backward()


def _taylor_batches(recipe, data_root, dev) -> list:
    """The first TAYLOR_BATCHES training batches, augmented as training augments them, with a fixed seed."""
    data = recipe.data
    train_set = CityscapesDataset(data_root, "train", TrainTransform(data.size, data.augment))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.schedule.seed)
        loader = DataLoader(train_set, batch_size=min(data.batch_size, len(train_set)), shuffle=False)
        return [(x.to(dev), y.to(dev)) for x, y in itertools.islice(loader, TAYLOR_BATCHES)]


def _val_miou(model, data_root, size, dev) -> float:
    loader = DataLoader(CityscapesDataset(data_root, "val", EvalTransform(size)), batch_size=1,
                        collate_fn=eval_collate)
    return evaluate.evaluate_model(model, loader, dev, progress=False).miou


def _out_dir(name: str, weights_dir) -> Path:
    out = checkpoints.variant_dir(name, weights_dir)
    out.mkdir(parents=True, exist_ok=True)
    return out


def _recipe(parent: Parent, name: str, description: str, **model) -> dict:
    raw = copy.deepcopy(parent.recipe)
    raw.update(name=name, description=description)
    raw["model"].update(model)
    return raw


def save_pruned(path: Path, model: torch.nn.Module, parent: Parent, figures: dict, *, store=None) -> str:
    """A pruned model's checkpoint: its weights, the channels of its layers (what rebuilds it from
    its family's model) and how it was made; returns its sha256 (recorded in `store` when given)."""
    name = derived_name(parent.name, "prune", figures["ratio"])
    description = (f"{parent.recipe.get('description', '')} Pruned: {figures['ratio']:.0%} of the FLOPs removed "
                   f"({figures['importance']} importance), fine-tuned {figures['finetune_iters']} iterations.").strip()
    digest = checkpoints.save(path, model.state_dict(), arch=parent.ckpt["arch"],
                              recipe=_recipe(parent, name, description), run_uid=None, epoch=0, iteration=0,
                              metrics={"miou": figures.get("miou_before_finetune")},
                              extra={"derived": parent.lineage("prune", **figures),
                                     "pruning": {"layers": layer_channels(model)}})
    if store is not None:  # the fine-tuning run does not exist yet: recorded under the run whose weights it holds
        store.record_checkpoint(path, digest, kind="pruned", run_uid=parent.ckpt.get("run_uid"),
                                run_id=parent.run["id"] if parent.run else None)
    return digest


def prune_and_finetune(parent: Parent, ratio: float, *, importance: str, finetune_iters: int | None, store,
                       data_root, device, weights_dir, resume: bool, progress: bool) -> dict:
    """`parent` pruned at `ratio` (pruned.pt, evaluated), fine-tuned (best.pt), evaluated and recorded."""
    name = derived_name(parent.name, "prune", ratio)
    out, dev = _out_dir(name, weights_dir), select_device(device)
    pruned_path = out / "pruned.pt"
    iters = finetune_iters if finetune_iters is not None else max(1, parent.ckpt.get("iteration", 0) // 4)
    t0 = time.perf_counter()
    if resume and pruned_path.is_file() and (out / "last.pt").is_file():
        _say(progress, f"{name}: resuming the fine-tuning of {pruned_path}")
    else:
        recipe = recipe_from_dict(parent.recipe, str(parent.path))
        model = checkpoints.build_from(parent.ckpt).to(dev)
        batches = _taylor_batches(recipe, data_root, dev) if importance == "taylor" else None
        loss = SegmentationLoss(recipe.schedule.loss, recipe.model.aux_weight)
        figures = prune(model, ratio, _flops_size(parent.eval_size), importance=importance, grad_batches=batches,
                        loss_fn=loss)
        figures.update(importance=importance, ratio=ratio, finetune_iters=iters,
                       miou_before_finetune=_val_miou(model, data_root, parent.eval_size, dev),
                       prune_seconds=time.perf_counter() - t0)
        save_pruned(pruned_path, model, parent, figures, store=store)
        _say(progress, f"{name}: {figures['flops_ratio']:.0%} of the parent's FLOPs ({figures['steps']} steps, "
                       f"{figures['channel_ratio']:.0%} of each layer's channels removed); val mIoU "
                       f"{figures['miou_before_finetune']:.4f} before fine-tuning")
    pruned = checkpoints.load(pruned_path, store=store)
    finetune = recipe_from_dict(_recipe(parent, name, pruned["recipe"]["description"],
                                        init_checkpoint=str(pruned_path), pretrained_backbone=False), name)
    if iters > 0:
        train_set = CityscapesDataset(data_root, "train")
        per_epoch = max(1, len(train_set) // min(finetune.data.batch_size, len(train_set)))
        finetune.schedule.max_iters, finetune.schedule.epochs = iters, math.ceil(iters / per_epoch)
        run_id = train(finetune, store=store, data_root=data_root, device=device, weights_dir=weights_dir,
                       resume=resume, progress=progress).run_id
    else:  # no fine-tuning: the pruned weights are the model
        run_id = _register(parent, finetune.to_dict(), pruned["model"], out / "best.pt", store=store,
                           data_root=data_root, device=dev, seconds=time.perf_counter() - t0,
                           lineage={"derived": pruned["derived"], "pruning": pruned["pruning"]})
    return _evaluate(name, out / "best.pt", run_id, store=store, data_root=data_root, device=device,
                     figures={"miou_before_finetune": pruned["derived"]["miou_before_finetune"]})


def _register(parent: Parent, recipe: dict, weights: dict, best: Path, *, store, data_root, device,
              lineage: dict, seconds: float) -> int | None:
    """A derived model made without training: best.pt written (`weights`, with its lineage), and a
    completed run for it linked to the parent's."""
    uid = uuid.uuid4().hex
    run_id = None
    if store is not None:
        val = CityscapesDataset(data_root, "val")
        run_id = store.start_run(
            variant=recipe["name"], arch=parent.ckpt["arch"], backbone=BACKBONES[parent.ckpt["arch"]],
            profile=recipe.get("profile", "full"), hyperparameters=recipe,
            dataset=parent.run["dataset"] if parent.run else val.name,
            data_root=str(data_root or ""), train_images=lineage["derived"].get("calibration_images", 0),
            val_images=len(val), device=device_name(device),
            code_version=checkpoints.code_version(), uid=uid,
            parent_run_id=parent.run["id"] if parent.run else None, derivation=lineage["derived"])
    checkpoints.save(best, weights, arch=parent.ckpt["arch"], recipe=recipe, run_uid=uid, epoch=0, iteration=0,
                     metrics={}, extra=lineage, store=store, run_id=run_id)
    if store is not None:
        store.finish_run(run_id, status="completed", train_seconds=seconds, checkpoint=str(best))
    return run_id


def _evaluate(name: str, best: Path, run_id, *, store, data_root, device, figures: dict) -> dict:
    """The derived model's evaluation and profile (as every run's), its figures added to its run."""
    res = evaluate.evaluate_checkpoint(variant=name, checkpoint=best, store=store, device=device,
                                       data_root=data_root, progress=False)
    if store is not None and run_id is not None:
        store.update_derivation(run_id, miou=res["miou"], **figures)
    ckpt = checkpoints.load(best)
    return {"name": name, "parent": ckpt["derived"]["parent"], "method": ckpt["derived"]["method"],
            "ratio": ckpt["derived"].get("ratio"), "checkpoint": str(best), "run_id": run_id,
            **{k: res.get(k) for k in ("params", "size_mb", "gflops", "latency_ms", "miou", "resolution", "device",
                                        "precision")},
            **{k: v for k, v in ckpt["derived"].items() if k not in ("method", "parent", "ratio")}, **figures}


def _say(progress: bool, message: str) -> None:
    if progress:
        print(message, flush=True)


def cpu_has_vnni() -> bool:
    """True where x86 int8 dot products do not saturate (AVX-512 VNNI, AVX-VNNI or AMX-INT8): there
    ONNX Runtime's u8s8 kernels use full-range weights; elsewhere weights are quantized to 7 bits
    (`reduce_range`), as ONNX Runtime's documentation advises."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(f in flags for f in ("avx512_vnni", "avx_vnni", "amx_int8"))


def _calibration_batches(data_root, size: tuple[int, int], n: int) -> list[np.ndarray]:
    """`n` training images spread evenly over the split, as the model sees them at evaluation."""
    data = CityscapesDataset(data_root, "train", EvalTransform(size))
    if n < 1:
        raise CompressError("--calibration-images must be at least 1")
    picks = np.linspace(0, len(data) - 1, min(n, len(data))).round().astype(int)
    return [data[int(i)][0][None].numpy() for i in dict.fromkeys(picks)]


def _float_nodes(onnx_model, num_classes: int) -> list[str]:
    """The Conv nodes whose weights have `num_classes` outputs: the classifiers' last convolutions."""
    from onnx import numpy_helper

    shapes = {t.name: numpy_helper.to_array(t).shape for t in onnx_model.graph.initializer}
    return [n.name for n in onnx_model.graph.node
            if n.op_type == "Conv" and len(n.input) > 1 and shapes.get(n.input[1], (None,))[0] == num_classes]


def quantize_onnx(fp32_onnx: Path, out: Path, calibration: list[np.ndarray], *, num_classes: int) -> dict:
    """ONNX Runtime static quantization of `fp32_onnx` into `out`; returns the settings used."""
    import onnx
    import onnxruntime
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    logging.getLogger().setLevel(max(logging.getLogger().level, logging.ERROR))  # its per-tensor "cannot quantize"
    pre = out.with_suffix(".pre.onnx")
    # ONNX Runtime's symbolic shape inference gives up on HRNet's padded, resized branches (and leaves
    # temp files in the working directory when it does); ONNX's own shape inference still runs
    quant_pre_process(str(fp32_onnx), str(pre), skip_symbolic_shape=True)
    float_nodes = _float_nodes(onnx.load(str(pre)), num_classes)
    reader = iter({"image": x} for x in calibration)

    class Reader:  # onnxruntime's CalibrationDataReader protocol
        def get_next(self):
            return next(reader, None)

    reduce_range = not cpu_has_vnni()
    quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QOperator, per_channel=True,
                    reduce_range=reduce_range, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    nodes_to_exclude=float_nodes, calibrate_method=CalibrationMethod.MinMax)
    pre.unlink(missing_ok=True)
    return {"format": "ONNX QOperator (QLinearConv), activations uint8, weights int8 per channel",
            "calibration": "MinMax", "reduce_range": reduce_range, "float_nodes": float_nodes,
            "onnxruntime": onnxruntime.__version__}


def quantize(parent: Parent, *, calibration_images: int, calibration_size: tuple[int, int] | None = None, store,
             data_root, device, weights_dir, progress: bool) -> dict:
    """`parent` quantized to INT8 (weights/<parent>+int8/best.pt holding the ONNX graph), evaluated, recorded."""
    import onnx

    from engine.onnx_backend import SHA_KEY, export_onnx

    name = derived_name(parent.name, "int8")
    out, dev = _out_dir(name, weights_dir), select_device(device)
    t0 = time.perf_counter()
    size = tuple(calibration_size or parent.eval_size)
    calibration = _calibration_batches(data_root, size, calibration_images)
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        fp32 = export_onnx(parent.path, Path(tmp) / "fp32.onnx")
        settings = quantize_onnx(fp32, Path(tmp) / "int8.onnx", calibration, num_classes=parent.ckpt["num_classes"])
        graph = onnx.load(str(Path(tmp) / "int8.onnx"))
    del graph.metadata_props[:]
    for key, value in ((SHA_KEY, ""), ("segbench_parent_sha256", parent.sha256), ("segbench_arch", parent.ckpt["arch"]),
                       ("segbench_precision", "int8")):
        graph.metadata_props.add(key=key, value=value)
    data = graph.SerializeToString()
    settings.update(calibration_images=len(calibration), calibration_size=f"{size[0]}x{size[1]}",
                    quantize_seconds=time.perf_counter() - t0)
    lineage = {"derived": parent.lineage("int8", ratio=None, **settings)}
    if parent.ckpt.get("pruning"):
        lineage["pruning"] = parent.ckpt["pruning"]
    lineage["int8"] = {"onnx": torch.frombuffer(bytearray(data), dtype=torch.uint8),
                       "onnx_sha256": hashlib.sha256(data).hexdigest()}
    recipe = _recipe(parent, name, f"{parent.recipe.get('description', '')} INT8 (ONNX Runtime, "
                                   f"{len(calibration)} calibration images).".strip(), init_checkpoint=None)
    run_id = _register(parent, recipe, {}, out / "best.pt", store=store, data_root=data_root, device=dev,
                       lineage=lineage, seconds=time.perf_counter() - t0)
    agreement = label_agreement(parent, out / "best.pt", data_root)
    _say(progress, f"{name}: quantized with {len(calibration)} calibration images in {settings['quantize_seconds']:.0f}s; "
                   f"labels agree with the float model on {agreement:.2%} of the val pixels")
    return _evaluate(name, out / "best.pt", run_id, store=store, data_root=data_root, device=device,
                     figures={"agreement": agreement})


def label_agreement(parent: Parent, derived: Path, data_root) -> float:
    """Share of pixels where the derived model's labels equal its parent's, on the first
    AGREEMENT_IMAGES val images at the eval size."""
    a, b = checkpoints.build_from(parent.ckpt), checkpoints.build_from(checkpoints.load(derived))
    data = CityscapesDataset(data_root, "val", EvalTransform(parent.eval_size))
    same = total = 0
    with torch.inference_mode():
        for i in range(min(AGREEMENT_IMAGES, len(data))):
            x = data[i][0][None]
            la, lb = a(x)["out"].argmax(1), b(x)["out"].argmax(1)
            same, total = same + int((la == lb).sum()), total + la.numel()
    return same / total


def compress(*, variant=None, checkpoint=None, method: str, ratios=(0.5,), importance: str = "l1",
             finetune_iters: int | None = None, calibration_images: int = DEFAULT_CALIBRATION_IMAGES,
             calibration_size: tuple[int, int] | None = None, store=None,
             data_root=None, device: str = "auto", weights_dir=None, resume: bool = False,
             progress: bool = True) -> list[dict]:
    """Every derived model `method` makes from the checkpoint of `variant` (or the file `checkpoint`),
    one per ratio for pruning; returns one summary per derived model (prune+int8: both)."""
    if method not in METHODS:
        raise CompressError(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
    parent = load_parent(variant=variant, checkpoint=checkpoint, weights_dir=weights_dir, store=store)
    if parent.ckpt.get("int8"):
        raise CompressError(f"{parent.name} is already an INT8 model: compress its float parent "
                            f"({parent.ckpt['derived']['parent']})")
    common = dict(store=store, data_root=data_root, device=device, weights_dir=weights_dir, progress=progress)
    if method == "int8":
        return [quantize(parent, calibration_images=calibration_images, calibration_size=calibration_size, **common)]
    results = []
    for ratio in ratios:
        pruned = prune_and_finetune(parent, ratio, importance=importance, finetune_iters=finetune_iters,
                                    resume=resume, **common)
        results.append(pruned)
        if method == "prune+int8":
            child = load_parent(checkpoint=pruned["checkpoint"], store=store)
            results.append(quantize(child, calibration_images=calibration_images, calibration_size=calibration_size,
                                    **common))
    return results
