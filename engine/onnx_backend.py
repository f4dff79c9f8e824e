"""ONNX export of a checkpoint, tied to it by the checkpoint's sha256 (the ONNX Runtime backend).

The export lives next to its checkpoint (`weights/<variant>/best.onnx`) and records the checkpoint's
sha256 in its metadata, so `ensure_onnx` can tell a stale export from a current one. An INT8
checkpoint (`engine.compress`) holds its quantized graph itself: `export_onnx` writes it out as
it is. The sessions that run graphs are in `engine.onnx_runtime`.
onnx/onnxruntime are imported lazily: `import engine.onnx_backend` works without them.
"""
from __future__ import annotations

import io
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

from engine import checkpoints, files
from engine.onnx_runtime import OnnxForward, OnnxUnavailable, _import  # noqa: F401  (the backend's names)

SHA_KEY = "segbench_checkpoint_sha256"

_fresh: dict[tuple, Path] = {}  # (checkpoint path, mtime_ns, size, onnx mtime_ns, size) -> up-to-date export


def onnx_path_for(checkpoint_path) -> Path:
    """Where a checkpoint's export lives: `<dir>/<stem>.onnx`."""
    path = Path(checkpoint_path)
    return path.with_name(f"{path.stem}.onnx")


class _Logits(torch.nn.Module):
    """The model with only its `"out"` logits as output (ONNX graphs return tensors, not dicts). A model
    with a `pad_multiple` > 1 pads its input behind a Python `if`, whose branch the tracer would bake
    in for the dummy input's size: the export pads unconditionally (a no-op for the model's own pad)."""

    def __init__(self, model: torch.nn.Module, pad_multiple: int = 1):
        super().__init__()
        self.model, self.pad_multiple = model, pad_multiple

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pad_multiple == 1:
            return self.model(x)["out"]
        h, w = x.shape[-2:]
        x = F.pad(x, (0, -w % self.pad_multiple, 0, -h % self.pad_multiple))
        return self.model(x)["out"][..., :h, :w]


def export_onnx(checkpoint_path, out=None, *, opset: int = 17) -> Path:
    """Export a checkpoint to ONNX (input "image": N,3,H,W normalised float32; output "logits":
    N,C,H,W; batch, height and width dynamic), atomically, with the checkpoint's sha256, arch and
    format in the model's metadata. Returns the path (default: `onnx_path_for(checkpoint_path)`)."""
    onnx = _import("onnx")
    # Hashed before loading: a checkpoint replaced in between then reads as stale, never as current.
    digest = checkpoints.sha256(checkpoint_path) if Path(checkpoint_path).is_file() else ""
    ckpt = checkpoints.load(checkpoint_path)
    out = Path(out) if out else onnx_path_for(checkpoint_path)
    if ckpt.get("int8"):  # already a graph: written as it is (its metadata names its float parent)
        with files.atomic_path(out) as tmp:
            tmp.write_bytes(checkpoints.int8_onnx_bytes(ckpt))
        return out
    model = checkpoints.build_from(ckpt)
    wrapped = _Logits(model, model.pad_multiple).eval()
    axes = {0: "batch", 2: "height", 3: "width"}
    buf = io.BytesIO()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            if wrapped.pad_multiple > 1:  # the model's own `if ph or pw` is what the tracer warns about
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
            torch.onnx.export(wrapped, (torch.zeros(1, 3, 256, 512),), buf, dynamo=False, opset_version=opset,
                              input_names=["image"], output_names=["logits"],
                              dynamic_axes={"image": axes, "logits": axes})
    except Exception as e:
        raise OnnxUnavailable(f"ONNX export of {checkpoint_path} failed: {type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''}") from e
    model = onnx.load_from_string(buf.getvalue())
    for key, value in ((SHA_KEY, digest), ("segbench_arch", ckpt["arch"]), ("segbench_format", checkpoints.FORMAT)):
        model.metadata_props.add(key=key, value=value)
    with files.atomic_path(out) as tmp:  # checked before it takes the real name
        tmp.write_bytes(model.SerializeToString())
        try:
            onnx.checker.check_model(str(tmp))
        except onnx.checker.ValidationError as e:
            raise OnnxUnavailable(f"ONNX export of {checkpoint_path} is invalid: {str(e).splitlines()[0]}") from e
    return out


def recorded_sha256(onnx_path) -> str | None:
    """The checkpoint sha256 an export was made from (None when unreadable or not recorded)."""
    onnx = _import("onnx")
    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception:
        return None
    return next((p.value for p in model.metadata_props if p.key == SHA_KEY), None)


def ensure_onnx(checkpoint_path) -> Path:
    """The checkpoint's export, (re-)exported when missing or made from other weights. The sha256
    comparison is remembered per (file, mtime, size), so repeated calls in one process are free."""
    checkpoint_path = Path(checkpoint_path)
    out = onnx_path_for(checkpoint_path)
    if not checkpoint_path.is_file():
        checkpoints.load(checkpoint_path)  # raises CheckpointError with the usual message
    key = (str(checkpoint_path.resolve()), *_stat(checkpoint_path), *_stat(out))
    if key in _fresh:
        return out
    if not out.is_file() or recorded_sha256(out) != checkpoints.sha256(checkpoint_path):
        export_onnx(checkpoint_path, out)
    _fresh[(str(checkpoint_path.resolve()), *_stat(checkpoint_path), *_stat(out))] = out
    return out


def _stat(path: Path) -> tuple[int, int]:
    try:
        st = path.stat()
    except FileNotFoundError:
        return (-1, -1)
    return (st.st_mtime_ns, st.st_size)
