"""The only place that writes and reads weights.

A checkpoint is a plain dict of tensors and Python primitives (no pickled classes), saved
atomically (temp file + rename, `engine.files`) and loaded with `torch.load(weights_only=True)`,
which refuses any pickle that would import or call code. `save(..., store=)` records the file's
sha256 in the results store; `load(..., store=)` checks the file against that record.

    format, arch, num_classes, model (state dict), recipe (dict), classes (names, label ids, colors),
    run_uid, epoch, iteration, metrics, code_version, created_at
    [+ optimizer, scheduler, rng, best_miou, elapsed_seconds, in_epoch: in `last.pt`, for --resume;
     there `epoch` is the last epoch completed and `in_epoch` (steps, loss_sum, seconds) the
     position inside the next one when it was written mid-epoch]
    [+ derived (parent, parent_sha256, method, ratio...): a model `engine.compress` made from another]
    [+ pruning (layers: name -> [in, out] channels): a pruned model's architecture, `engine.models.pruned`]
    [+ int8 (onnx: the quantized ONNX graph as a uint8 tensor, onnx_sha256, settings): an INT8 model,
     whose `model` state dict is empty; it runs in ONNX Runtime (`engine.onnx_runtime.OnnxModel`)]
"""
from __future__ import annotations

import functools
import hashlib
import os
import pickle
import re
import subprocess
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

import torch

from engine import __version__, classes, files, settings
from engine.errors import UserError

FORMAT = "segbench-checkpoint/1"


class CheckpointError(UserError, RuntimeError):
    pass


@functools.cache
def code_version() -> str:
    """Package version plus the git commit when the code runs from a checkout (asked once per process)."""
    try:
        sha = subprocess.run(["git", "-C", str(settings.REPO_ROOT), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"{__version__}+{sha}" if sha else __version__


def class_table() -> dict:
    return {"names": list(classes.CLASS_NAMES),
            "label_ids": [int(classes.TRAIN_ID_TO_LABEL_ID[i]) for i in range(classes.NUM_CLASSES)],
            "colors": classes.PALETTE.tolist()}


def variant_dir(variant: str, weights_dir=None) -> Path:
    return settings.weights_dir(weights_dir) / variant


def sha256(path: str | os.PathLike) -> str:
    with open(path, "rb") as f:
        return _sha256_of(f)


def _sha256_of(f) -> str:
    h = hashlib.sha256()
    for chunk in iter(lambda: f.read(1 << 20), b""):
        h.update(chunk)
    return h.hexdigest()


def save(path: str | os.PathLike, state_dict: dict[str, torch.Tensor], *, arch: str, recipe: dict, run_uid: str,
         epoch: int, iteration: int, metrics: dict, extra: dict | None = None, store=None,
         run_id: int | None = None) -> str:
    """Write a model's state dict and its description atomically; returns the file's sha256, which
    is also recorded in `store` when given (kind: the file's stem, "best" or "last")."""
    state = {k: v.detach().cpu() for k, v in state_dict.items()}
    ckpt = {"format": FORMAT, "arch": arch, "num_classes": classes.NUM_CLASSES, "model": state, "recipe": recipe,
            "classes": class_table(), "run_uid": run_uid, "epoch": epoch, "iteration": iteration,
            "metrics": metrics, "code_version": code_version(),
            "created_at": datetime.now(timezone.utc).isoformat(), **(extra or {})}
    path = Path(path)
    with files.atomic_path(path) as tmp:
        torch.save(ckpt, tmp)
        digest = sha256(tmp)  # hashed before the rename: the record is current as soon as it is written
    if store is not None:
        store.record_checkpoint(path, digest, kind=path.stem, run_uid=run_uid, run_id=run_id)
    return digest


def load(path: str | os.PathLike, map_location="cpu", *, store=None) -> dict:
    """A checkpoint's dict, read as data only (weights_only: a pickle that would run code is refused).
    With `store`, the file's sha256 must match the one recorded when training wrote it; a file with
    no record (copied from elsewhere) loads unchecked. The hash and the load read the same open
    file, so a checkpoint replaced in between cannot slip through."""
    return _load(path, map_location, store, hashed=store is not None)[0]


def load_with_sha256(path: str | os.PathLike, map_location="cpu", *, store=None) -> tuple[dict, str]:
    """`load`, plus the sha256 of the very bytes it loaded (what evaluation records)."""
    return _load(path, map_location, store, hashed=True)


def _load(path, map_location, store, hashed: bool) -> tuple[dict, str | None]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}; train one with `python -m engine train --variant NAME`")
    for attempt in (0, 1):
        with open(path, "rb") as f:
            digest = _sha256_of(f) if hashed else None
            record = store.checkpoint_record(path) if store is not None else None
            if record is None or record["sha256"] == digest:
                f.seek(0)
                return _read(path, f, map_location), digest
        if attempt == 0:  # training may be between replacing the file and recording its hash: look again
            time.sleep(1.0)
    raise CheckpointError(f"{path}: sha256 {digest[:12]}… does not match the {record['sha256'][:12]}… recorded when "
                          f"it was written ({record['written_at']:%Y-%m-%d %H:%M:%S} UTC); the file was changed or "
                          f"corrupted")


def _read(path: Path, f, map_location) -> dict:
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": the error below says it all
            warnings.simplefilter("ignore")
            ckpt = torch.load(f, map_location=map_location, weights_only=True)
    except Exception as e:  # weights_only refuses anything that would run code when unpickled
        text = str(e)
        if isinstance(e, pickle.UnpicklingError):  # torch's own message suggests weights_only=False: never
            what = re.search(r"GLOBAL [\w.]+|Unsupported operand \d+", text)
            raise CheckpointError(
                f"{path}: refused to load: it holds pickled Python objects ({what.group(0) if what else 'not plain data'}),"
                f" not just tensors and plain data; unpickling them could run code, so checkpoints are only loaded "
                f"as data (torch.load weights_only=True)") from None
        raise CheckpointError(f"{path}: not a loadable checkpoint ({type(e).__name__}: "
                              f"{text.splitlines()[0] if text else 'the file ends early'})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a segbench checkpoint (format {ckpt.get('format') if isinstance(ckpt, dict) else type(ckpt).__name__})")
    return ckpt


def build_from(ckpt: dict) -> torch.nn.Module:
    """The model a checkpoint describes, with its weights, in eval mode: its family's model, shrunk
    to the recorded channels when pruned; for an INT8 checkpoint, its ONNX graph in ONNX Runtime."""
    from engine.models import build_model
    from engine.models.pruned import shrink_to

    model_cfg = ckpt["recipe"]["model"]
    model = build_model(ckpt["arch"], num_classes=ckpt["num_classes"], dropout=model_cfg.get("dropout", 0.0),
                        aux_loss=model_cfg.get("aux_loss", False), head=model_cfg.get("head"))
    if ckpt.get("pruning"):
        shrink_to(model, ckpt["pruning"]["layers"])
    if ckpt.get("int8"):
        from engine.onnx_runtime import OnnxModel

        return OnnxModel(int8_onnx_bytes(ckpt), float_model=model.eval())
    model.load_state_dict(ckpt["model"])
    return model.eval()


def int8_onnx_bytes(ckpt: dict) -> bytes:
    """The ONNX graph of an INT8 checkpoint, checked against the sha256 recorded beside it."""
    data = ckpt["int8"]["onnx"].numpy().tobytes()
    if hashlib.sha256(data).hexdigest() != ckpt["int8"]["onnx_sha256"]:
        raise CheckpointError("the INT8 checkpoint's ONNX graph does not match its recorded sha256")
    return data


def trained_root(path: str | os.PathLike, weights_dir=None) -> Path:
    """The trained model a derived one (`engine.compress`) was made from, through every step (a
    `+prune0.5+int8`'s is the model before `+prune0.5`), found by name in `weights_dir`; `path` itself
    for a trained model."""
    path = Path(path)
    for _ in range(8):
        derived = load(path).get("derived")
        if not derived:
            return path
        path = resolve(derived["parent"], None, weights_dir)
    raise CheckpointError(f"{path}: too many derivation steps")


def resolve(variant: str | None = None, checkpoint: str | os.PathLike | None = None, weights_dir=None,
            which: str = "best") -> Path:
    if checkpoint:
        return Path(checkpoint)
    if not variant:
        raise CheckpointError("give a variant name or a checkpoint path")
    path = variant_dir(variant, weights_dir) / f"{which}.pt"
    if not path.is_file():
        raise CheckpointError(f"no checkpoint for {variant} at {path}; train it with "
                              f"`python -m engine train --variant {variant}`")
    return path
