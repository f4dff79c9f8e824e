"""ONNX export of a checkpoint and an ONNX Runtime forward pass with `forward_logits`' contract.

The export lives next to its checkpoint (`weights/<variant>/best.onnx`) and records the checkpoint's
sha256 in its metadata, so `ensure_onnx` can tell a stale export from a current one.
onnx/onnxruntime are imported lazily: `import engine.onnx_backend` works without them.
"""
from __future__ import annotations

import importlib
import io
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

from engine import checkpoints, files
from engine.errors import UserError

SHA_KEY = "segbench_checkpoint_sha256"

_fresh: dict[tuple, Path] = {}  # (checkpoint path, mtime_ns, size, onnx mtime_ns, size) -> up-to-date export


class OnnxUnavailable(UserError, RuntimeError):
    pass


def _import(name: str):
    try:
        return importlib.import_module(name)
    except ImportError:
        raise OnnxUnavailable(f"{name} is not installed: `pip install onnx onnxruntime`") from None


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


class OnnxForward:
    """An ONNX Runtime session used like `engine.runtime.forward_logits(model, images)`:
    normalised float32 (N, 3, H, W) in, float32 logits (N, C, H, W) out, on the images' device."""

    def __init__(self, onnx_path, device: torch.device, threads: int | None = None):
        ort = _import("onnxruntime")
        self.path = Path(onnx_path)
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = threads or torch.get_num_threads()
        providers: list = ["CPUExecutionProvider"]
        if torch.device(device).type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": torch.device(device).index or 0}))
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=opts, providers=providers)
        except Exception as e:
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise OnnxUnavailable(f"ONNX Runtime cannot load {self.path.name}: {msg}") from None

    @property
    def providers(self) -> list[str]:
        """The execution providers the session actually uses, in priority order."""
        return self.session.get_providers()

    @property
    def name(self) -> str:
        return "onnxruntime-cuda" if self.providers[0] == "CUDAExecutionProvider" else "onnxruntime-cpu"

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = images.detach().to("cpu", torch.float32).contiguous().numpy()
        (logits,) = self.session.run(["logits"], {"image": x})
        return torch.from_numpy(logits).to(images.device)
