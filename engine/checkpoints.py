"""The only place that writes and reads weights.

A checkpoint is a plain dict of tensors and Python primitives (no pickled classes), saved
atomically (temp file + rename) and loaded with `torch.load(weights_only=True)`:

    format, arch, num_classes, model (state dict), recipe (dict), classes (names, label ids, colors),
    run_uid, epoch, iteration, metrics, code_version, created_at
    [+ optimizer, scheduler, rng: in `last.pt`, for --resume]
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import torch

from engine import __version__, classes, settings

FORMAT = "segbench-checkpoint/1"


class CheckpointError(RuntimeError):
    pass


def code_version() -> str:
    """Package version plus the git commit when the code runs from a checkout."""
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
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save(path: str | os.PathLike, state_dict: dict[str, torch.Tensor], *, arch: str, recipe: dict, run_uid: str,
         epoch: int, iteration: int, metrics: dict, extra: dict | None = None) -> str:
    """Write a model's state dict and its description atomically; returns the file's sha256."""
    state = {k: v.detach().cpu() for k, v in state_dict.items()}
    ckpt = {"format": FORMAT, "arch": arch, "num_classes": classes.NUM_CLASSES, "model": state, "recipe": recipe,
            "classes": class_table(), "run_uid": run_uid, "epoch": epoch, "iteration": iteration,
            "metrics": metrics, "code_version": code_version(),
            "created_at": datetime.now(timezone.utc).isoformat(), **(extra or {})}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(ckpt, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return sha256(path)


def load(path: str | os.PathLike, map_location="cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}; train one with `python -m engine train --variant NAME`")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # weights_only refuses anything that would run code when unpickled
        raise CheckpointError(f"{path}: not a loadable checkpoint ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a segbench checkpoint (format {ckpt.get('format') if isinstance(ckpt, dict) else type(ckpt).__name__})")
    return ckpt


def build_from(ckpt: dict) -> torch.nn.Module:
    """The model a checkpoint describes, with its weights, in eval mode."""
    from engine.models import build_model

    model_cfg = ckpt["recipe"]["model"]
    model = build_model(ckpt["arch"], num_classes=ckpt["num_classes"], dropout=model_cfg.get("dropout", 0.0),
                        aux_loss=model_cfg.get("aux_loss", False))
    model.load_state_dict(ckpt["model"])
    return model.eval()


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
