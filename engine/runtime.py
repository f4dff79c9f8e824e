"""Where and in what precision a model runs: the device, autocast, and float32 logits at any size.

Training, evaluation, profiling and the fast inference path (`engine.inference`) all run models
through these few functions, so "auto" means the same everywhere: bf16 autocast on CUDA, float32
on the CPU (the fast path may calibrate a lower precision on top, `engine.mixed_precision`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from engine.errors import UserError

PRECISIONS = ("auto", "fp32", "bf16", "fp16", "mixed")


class DeviceUnavailable(UserError, RuntimeError):
    pass


def select_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceUnavailable(f"--device {name} was asked for but no CUDA device is available (use --device cpu)")
    return torch.device(name)


def resolve_precision(precision: str, device: torch.device) -> str:
    """'auto' -> bf16 on CUDA, fp32 on CPU (before any calibration); fp16 only on CUDA."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise DeviceUnavailable("fp16 inference needs a CUDA device (use bf16 or fp32 on the CPU)")
    return precision


def cpu_has_fast_bf16() -> bool:
    """True where oneDNN runs bf16 natively on this CPU (AMX tiles or AVX-512 BF16). Elsewhere bf16
    still works on the CPU, only slower: tests force either answer by monkeypatching this function."""
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
