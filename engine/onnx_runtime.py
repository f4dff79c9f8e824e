"""ONNX Runtime sessions used like our models: `OnnxForward` (images -> logits, as
`engine.runtime.forward_logits`) and `OnnxModel` (an INT8 checkpoint's graph as a model).

Imports nothing of the engine but its errors, so `engine.checkpoints` can build an INT8 model and
`engine.onnx_backend` (the export, which loads checkpoints) can run one. onnxruntime is imported
lazily: `import engine.onnx_runtime` works without it.
"""
from __future__ import annotations

import importlib
from pathlib import Path

import torch

from engine.errors import UserError


class OnnxUnavailable(UserError, RuntimeError):
    pass


def _import(name: str):
    try:
        return importlib.import_module(name)
    except ImportError:
        raise OnnxUnavailable(f"{name} is not installed: `pip install onnx onnxruntime`") from None


class OnnxForward:
    """An ONNX Runtime session used like `engine.runtime.forward_logits(model, images)`:
    normalised float32 (N, 3, H, W) in, float32 logits (N, C, H, W) out, on the images' device.
    `onnx_model`: a file, or the graph's bytes."""

    def __init__(self, onnx_model, device: torch.device, threads: int | None = None):
        ort = _import("onnxruntime")
        self.path = Path("<in memory>") if isinstance(onnx_model, bytes) else Path(onnx_model)
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = threads or torch.get_num_threads()
        # no busy-waiting between runs: its threads would take the cores from PyTorch working beside it
        # (the dashboard, an evaluation next to a comparison), which then runs several times slower
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers: list = ["CPUExecutionProvider"]
        if torch.device(device).type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": torch.device(device).index or 0}))
        try:
            source = onnx_model if isinstance(onnx_model, bytes) else str(self.path)
            self.session = ort.InferenceSession(source, sess_options=opts, providers=providers)
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


class OnnxModel(torch.nn.Module):
    """An INT8 model (an ONNX graph with QLinearConv nodes) used like our float models: images in,
    `{"out": logits}` at the input's size out. It runs on ONNX Runtime's CPU provider, where its
    integer kernels are, whatever device the images are on (the logits come back there).
    `float_model` is its float architecture (weights unused): what parameters and FLOPs are
    counted on (`engine.profiling`), as for its parent."""
    pad_multiple = 1  # the graph pads inside itself (`_Logits`)
    precision = "int8"
    runs_on = torch.device("cpu")

    def __init__(self, onnx_bytes: bytes, float_model: torch.nn.Module, threads: int | None = None):
        super().__init__()
        self._forward = OnnxForward(onnx_bytes, torch.device("cpu"), threads)
        self.__dict__["float_model"] = float_model  # not a submodule: no parameters, no .to() of its own

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"out": self._forward(x)}
