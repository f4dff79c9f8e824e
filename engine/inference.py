"""The fast inference path: a checkpoint and RGB images of any size -> trainIds at the image's size.

The dashboard, `segment`, `coverage` and `bench` go through `Segmenter`, which wraps a checkpoint
with the options of `InferenceOptions`, as a pipeline: load -> rewrites (`engine.model_rewrites`:
BatchNorm folded into convs, wide dilations as GEMMs, weights stored in the inference dtype) ->
precision (`engine.mixed_precision.choose_precision`: bf16 on CUDA, calibrated on a CPU with
native bf16) -> optional torch.compile; or the ONNX Runtime backend as a branch of its own, which
is also how an INT8 checkpoint (`engine.compress`) always runs. On
top: channels_last, batches of frames, flip / multi-scale test-time augmentation and
sliding-window inference for large images.

Evaluation and training run models through `engine.runtime` (float32 on the CPU, bf16 autocast on
CUDA) and never import this module: recorded accuracy never depends on the fast path.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

from engine import checkpoints
from engine.data.transforms import to_tensor
from engine.mixed_precision import choose_precision
from engine.model_rewrites import prepare_for_inference
from engine.runtime import PRECISIONS, forward_logits, select_device, upsample

BACKENDS = ("torch", "onnx")
CALIBRATION_SIZE = (512, 256)   # the calibration scene's size (W, H) for input_size "native"


@dataclass(frozen=True)
class InferenceOptions:
    backend: str = "torch"                      # torch | onnx (ONNX Runtime)
    precision: str = "auto"                     # auto (bf16 on CUDA, calibrated on CPU) | fp32 | bf16 | fp16 | mixed
    channels_last: bool = True
    compile: bool = False                       # torch.compile (torch backend only)
    flip: bool = False                          # TTA: average with the horizontally flipped image
    scales: tuple[float, ...] = (1.0,)          # TTA: input scales, logits averaged at the input size
    window: tuple[int, int] | None = None       # sliding window (W, H) at the input size; None = whole image
    batch_size: int | None = None               # frames per forward in predict_batch; None = 4 on CUDA, 1 on CPU
    rewrite: bool = True                        # engine.model_rewrites (torch backend only)
    min_agreement: float = 0.995                # "auto" on a bf16 CPU, "mixed": calibration agreement needed

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if not self.scales or any(s <= 0 for s in self.scales):
            raise ValueError(f"TTA scales must be positive, got {self.scales}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError("batch_size must be at least 1")

    @classmethod
    def baseline(cls) -> InferenceOptions:
        """Plain eager fp32, contiguous NCHW, one image at a time: what the benchmark measures against."""
        return cls(precision="fp32", channels_last=False, batch_size=1, rewrite=False)


def _default_batch(options: InferenceOptions, device: torch.device) -> InferenceOptions:
    """Options with a batch size: as given, else 4 frames per forward on CUDA and 1 on the CPU. A GPU
    needs several frames to fill; on the CPU one frame already fills every core, and a batch only
    grows the working set past the caches (R101 bf16 at 1024x512, 2 cores: batch 1 ~0.95 s/frame,
    batch 4 ~1.7 s/frame; docs/benchmarks.md)."""
    if options.batch_size is not None:
        return options
    return replace(options, batch_size=4 if device.type == "cuda" else 1)


def sliding_window_logits(forward, x: torch.Tensor, window: tuple[int, int], num_classes: int) -> torch.Tensor:
    """Logits of a large input from overlapping crops (stride 2/3 of the window), averaged where
    they overlap; inputs smaller than the window go through whole."""
    n, _, h, w = x.shape
    ww, wh = min(window[0], w), min(window[1], h)
    sx, sy = max(1, ww * 2 // 3), max(1, wh * 2 // 3)
    xs = sorted({*range(0, w - ww, sx), w - ww})
    ys = sorted({*range(0, h - wh, sy), h - wh})
    out = torch.zeros((n, num_classes, h, w), device=x.device)
    count = torch.zeros((1, 1, h, w), device=x.device)
    for y0 in ys:
        for x0 in xs:
            out[..., y0:y0 + wh, x0:x0 + ww] += forward(x[..., y0:y0 + wh, x0:x0 + ww])
            count[..., y0:y0 + wh, x0:x0 + ww] += 1
    return out / count


class Segmenter:
    """A trained checkpoint ready to label RGB images of any size.

    `input_size` (W, H): the size the model sees (default: the recipe's eval size, else its train
    size); "native" feeds each image at its own size. Labels always come back at the image's own
    resolution (logits upsampled bilinearly before the argmax, as evaluation does).
    """

    def __init__(self, checkpoint_path, device: str | torch.device = "auto",
                 input_size: tuple[int, int] | str | None = None, options: InferenceOptions | None = None,
                 store=None):
        self.device = select_device(str(device))
        self.options = _default_batch(options or InferenceOptions(), self.device)
        self.checkpoint_path = checkpoint_path
        # store: check the file against the sha256 recorded at training (kept: what the store knows it by)
        self.ckpt, self.sha256 = (checkpoints.load_with_sha256(checkpoint_path, store=store) if store is not None
                                  else (checkpoints.load(checkpoint_path), None))
        self.num_classes = int(self.ckpt["num_classes"])
        recipe = self.ckpt["recipe"]["data"]
        self.input_size = input_size if input_size == "native" else tuple(
            input_size or recipe.get("eval_size") or recipe["size"])
        self.memory_format = torch.channels_last if self.options.channels_last else torch.contiguous_format
        self.rewrites: dict = {}
        self.calibration: dict | None = None     # what choose_precision measured, where it calibrated
        if self.ckpt.get("int8"):  # an INT8 model (engine.compress) is its ONNX graph: nothing to choose
            self._load_int8()
            return
        if self.options.backend == "onnx":
            self._load_onnx()
            return
        model = checkpoints.build_from(self.ckpt).eval()
        if self.options.rewrite:
            model, self.rewrites = prepare_for_inference(model, self.device, self.memory_format)
        else:
            model = model.to(self.device, memory_format=self.memory_format)
        size = CALIBRATION_SIZE if self.input_size == "native" else self.input_size
        model, self.precision, self.calibration = choose_precision(model, self.device, self.options, size)
        # freezing: constant weights, so inductor prepacks them for oneDNN and fuses conv + add + ReLU (CPU)
        self.model = torch.compile(model, options={"freezing": self.device.type == "cpu"}) \
            if self.options.compile else model
        self._forward = lambda x: forward_logits(self.model, x, self.precision)
        self.backend_name = "torch" + ("-compile" if self.options.compile else "")

    def _load_onnx(self) -> None:
        """ONNX Runtime instead of PyTorch: the checkpoint's export (made or refreshed here), float32."""
        from engine.onnx_backend import ensure_onnx
        from engine.onnx_runtime import OnnxForward

        self.model, self.precision = None, "fp32"
        self._forward = OnnxForward(ensure_onnx(self.checkpoint_path), self.device)
        self.backend_name = self._forward.name

    def _load_int8(self) -> None:
        """An INT8 checkpoint: its quantized graph in ONNX Runtime (CPU), whatever the options ask."""
        from engine.onnx_runtime import OnnxForward

        self.model, self.precision = None, "int8"
        self._forward = OnnxForward(checkpoints.int8_onnx_bytes(self.ckpt), torch.device("cpu"))
        self.backend_name = "onnxruntime-cpu"

    def _model_input_size(self, h: int, w: int) -> tuple[int, int]:
        """(H, W) the model sees for an image of h x w."""
        return (h, w) if self.input_size == "native" else (self.input_size[1], self.input_size[0])

    def _logits_at(self, x: torch.Tensor) -> torch.Tensor:
        """Logits at x's size: whole image or sliding window."""
        x = x.contiguous(memory_format=self.memory_format)
        if self.options.window:
            return sliding_window_logits(self._forward, x, self.options.window, self.num_classes)
        return self._forward(x)

    @torch.inference_mode()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised images (N, 3, H, W) at the model's input size -> float32 logits at that size,
        with the test-time augmentation of the options (flip, scales) averaged."""
        size = tuple(x.shape[-2:])
        total, views = None, 0
        for s in self.options.scales:
            xs = x if s == 1.0 else F.interpolate(x, scale_factor=s, mode="bilinear", align_corners=False)
            for flip in (False, True) if self.options.flip else (False,):
                xi = xs.flip(-1) if flip else xs
                out = self._logits_at(xi)
                out = upsample(out.flip(-1) if flip else out, size)
                total = out if total is None else total + out
                views += 1
        return total / views if views > 1 else total

    def _prepare(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        h, w = images[0].shape[:2]
        x = torch.stack([to_tensor(im) for im in images])
        mh, mw = self._model_input_size(h, w)
        if (mh, mw) != (h, w):
            x = TF.resize(x, [mh, mw], antialias=True)
        return x.to(self.device, non_blocking=True)

    @torch.inference_mode()
    def predict_batch(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """RGB uint8 HxWx3 images of one size -> trainIds uint8 HxW each, `options.batch_size` per forward."""
        out = []
        for i in range(0, len(images), self.options.batch_size):
            chunk = images[i:i + self.options.batch_size]
            if any(im.shape != chunk[0].shape for im in chunk):
                raise ValueError("predict_batch needs images of one size; use predict() for mixed sizes")
            logits = upsample(self.logits(self._prepare(chunk)), chunk[0].shape[:2])
            out += list(logits.argmax(1).to(torch.uint8).cpu().numpy())
        return out

    def predict(self, image: np.ndarray) -> np.ndarray:
        """RGB uint8 HxWx3 -> trainIds uint8 HxW at the image's own resolution."""
        return self.predict_batch([image])[0]
