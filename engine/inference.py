"""The one inference path: a model and normalised images -> logits or trainIds at any output size.

Evaluation, training-time validation, the dashboard and the CLI all go through here.
`Segmenter` wraps a checkpoint with the fast path (`InferenceOptions`): inference mode,
channels_last, the rewrites of `engine.model_rewrites` (BatchNorm folded into convs, wide
dilations as GEMMs on the CPU, weights stored in the inference dtype), reduced precision where
it keeps the labels, batches of frames, optional torch.compile, the ONNX Runtime backend, flip /
multi-scale test-time augmentation and sliding-window inference for large images.

Precision "auto": bf16 on CUDA. On a CPU with native bf16 (AMX or AVX-512 BF16, where it is
several times faster), bf16 if this checkpoint labels a calibration street scene the same as
float32 on at least `min_agreement` of its pixels; else "mixed", bf16 for the largest share of
the convs that keeps that agreement (`engine.mixed_precision`); else float32: a barely trained
model's near-tied logits can flip under bf16, and then exactness wins. Evaluation (`forward_logits`
with "auto") stays float32 on the CPU, so recorded accuracy never depends on the CPU model.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

from engine import checkpoints
from engine.data.transforms import to_tensor
from engine.model_rewrites import prepare_for_inference, weights_in

BACKENDS = ("torch", "onnx")
PRECISIONS = ("auto", "fp32", "bf16", "fp16", "mixed")


class DeviceUnavailable(RuntimeError):
    pass


def select_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceUnavailable(f"--device {name} was asked for but no CUDA device is available (use --device cpu)")
    return torch.device(name)


def resolve_precision(precision: str, device: torch.device) -> str:
    """'auto' -> bf16 on CUDA, fp32 on CPU (before calibration); fp16 only on CUDA."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise DeviceUnavailable("fp16 inference needs a CUDA device (use bf16 or fp32 on the CPU)")
    return precision


def cpu_has_fast_bf16() -> bool:
    """True where oneDNN runs bf16 natively on this CPU (AMX tiles or AVX-512 BF16)."""
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return torch.backends.mkldnn.is_available() and any(getattr(torch.cpu, f, lambda: False)() for f in probes)


def autocast(device: torch.device, precision: str = "auto"):
    """The autocast context for a precision ('auto': bf16 on CUDA, full precision on CPU)."""
    precision = resolve_precision(precision, device)
    if precision in ("fp32", "mixed"):   # a mixed model casts per conv itself (engine.mixed_precision)
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def forward_logits(model: torch.nn.Module, images: torch.Tensor, precision: str = "auto") -> torch.Tensor:
    """Float32 logits (N, C, H, W) at the input size."""
    with autocast(images.device, precision):
        return model(images)["out"].float()


def upsample(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear upsampling of logits to (H, W) (identity when already there)."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


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
        self.options = options or InferenceOptions()
        self.checkpoint_path = checkpoint_path
        self.ckpt = checkpoints.load(checkpoint_path, store=store)  # store: check the sha256 recorded at training
        self.device = select_device(str(device))
        if self.options.batch_size is None:
            # a GPU needs several frames to fill; on the CPU one frame already fills every core, and a
            # batch only grows the working set past the caches (R101 bf16 at 1024x512, 2 cores: batch 1
            # ~0.95 s/frame, batch 4 ~1.7 s/frame; docs/benchmarks.md)
            self.options = replace(self.options, batch_size=4 if self.device.type == "cuda" else 1)
        self.precision = resolve_precision(self.options.precision, self.device)
        self.num_classes = int(self.ckpt["num_classes"])
        recipe = self.ckpt["recipe"]["data"]
        self.input_size = input_size if input_size == "native" else tuple(
            input_size or recipe.get("eval_size") or recipe["size"])
        self.memory_format = torch.channels_last if self.options.channels_last else torch.contiguous_format
        self.rewrites: dict = {}
        # precision "auto" on a bf16 CPU, or "mixed": what was chosen ("chosen": bf16 | mixed | fp32), its
        # "agreement" with float32 on the calibration scene, full bf16's ("bf16_agreement", auto only) and,
        # after a per-conv search, the share of conv FLOPs in bf16 ("bf16_share") and the conv counts
        self.calibration: dict | None = None
        if self.options.backend == "onnx":
            from engine.onnx_backend import OnnxForward, ensure_onnx

            self.model = None
            self._forward = OnnxForward(ensure_onnx(checkpoint_path), self.device)
            self.backend_name = self._forward.name
            self.precision = "fp32"
        else:
            model = checkpoints.build_from(self.ckpt).eval()
            if self.options.rewrite:
                model, self.rewrites = prepare_for_inference(model, self.device, self.memory_format)
            else:
                model = model.to(self.device, memory_format=self.memory_format)
            if self.options.precision == "mixed" or (
                    self.options.precision == "auto" and self.device.type == "cpu" and cpu_has_fast_bf16()):
                model = self._calibrate(model)
            else:
                model = self._in_precision(model, self.precision)
            # freezing: constant weights, so inductor prepacks them for oneDNN and fuses conv + add + ReLU (CPU)
            self.model = torch.compile(model, options={"freezing": self.device.type == "cpu"}) \
                if self.options.compile else model
            self._forward = lambda x: forward_logits(self.model, x, self.precision)
            self.backend_name = "torch" + ("-compile" if self.options.compile else "")

    def _in_precision(self, model: torch.nn.Module, precision: str) -> torch.nn.Module:
        """With rewrites, a copy whose conv weights are stored in the autocast dtype; else `model`."""
        return weights_in(model, precision) if self.options.rewrite and precision in ("bf16", "fp16") else model

    def _calibrate(self, model: torch.nn.Module) -> torch.nn.Module:
        """Precision "auto" on a bf16 CPU: bf16 if it keeps `min_agreement` of the float32 labels of
        a synthetic street scene at the model's input size (512x256 for "native"); failing that
        (and for precision "mixed"), bf16 for the largest share of the convs that keeps it
        (`engine.mixed_precision`); failing that, float32."""
        from engine.data.synthetic import render_scene
        from engine.mixed_precision import calibrate_mixed

        start = time.perf_counter()
        w, h = (512, 256) if self.input_size == "native" else self.input_size
        x = self._scene(render_scene(np.random.default_rng(0), w, h)[0])
        self.calibration = {"size": f"{w}x{h}"}
        ref = None                                      # float32 labels of the scene, once
        if self.options.precision == "auto":
            fast = self._in_precision(model, "bf16")
            with torch.inference_mode():
                ref = forward_logits(model, x, "fp32").argmax(1)
                agreement = float((forward_logits(fast, x, "bf16").argmax(1) == ref).float().mean())
            self.calibration["bf16_agreement"] = agreement
            if agreement >= self.options.min_agreement:
                self.precision = self.calibration["chosen"] = "bf16"
                self.calibration.update(agreement=agreement, seconds=time.perf_counter() - start)
                return fast
        sw, sh = max(64, w // 8), max(32, h // 8)       # per-conv probes on a small version of the scene
        small = self._scene(render_scene(np.random.default_rng(0), sw, sh)[0])
        mixed, summary = calibrate_mixed(model, x, small, self.options.min_agreement, reference=ref,
                                         forward=lambda m, b: forward_logits(m, b, "mixed"))
        self.calibration.update(summary, seconds=time.perf_counter() - start)
        self.precision = self.calibration["chosen"] = "mixed" if summary["bf16_convs"] else "fp32"
        return mixed if self.precision == "mixed" else model

    def _scene(self, image: np.ndarray) -> torch.Tensor:
        """A calibration image, fed at its own size, in the model's memory format."""
        x = to_tensor(image)[None].to(self.device)
        return x.contiguous(memory_format=self.memory_format)

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
