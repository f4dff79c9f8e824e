"""What a model costs: parameters, checkpoint size, FLOPs, latency, peak memory.

FLOPs come from `torch.utils.flop_counter` (a multiply-add counts as 2 FLOPs) for one image at
the evaluation resolution. An INT8 model (`engine.onnx_runtime.OnnxModel`) is counted on its float
architecture (the same operations, in integers) and timed where it runs (the CPU), as "int8". Latency is the median of repeated batch-1 forward passes after
warm-up, with the device, thread count, precision and resolution recorded next to it.
"""
from __future__ import annotations

import os
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from engine.runtime import autocast


@dataclass(frozen=True)
class Profile:
    """What a model costs, and the setup its latency was measured on."""
    params: int
    size_mb: float            # the checkpoint file, 10^6 bytes
    gflops: float             # one image at `resolution`
    latency_ms: float         # median batch-1 forward at `resolution`
    device: str
    threads: int
    precision: str
    resolution: str           # WxH
    peak_memory_mb: float | None = None   # CUDA only


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def gflops(model: torch.nn.Module, size: tuple[int, int], device: torch.device) -> float:
    x = torch.zeros(1, 3, size[1], size[0], device=device)
    model.eval()
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops() / 1e9


def latency_ms(model: torch.nn.Module, size: tuple[int, int], device: torch.device, repeats: int = 10,
               warmup: int = 2) -> float:
    x = torch.randn(1, 3, size[1], size[0], device=device)
    model.eval()
    times = []
    with torch.inference_mode(), autocast(device):
        for i in range(warmup + repeats):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            model(x)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i >= warmup:
                times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def profile(model: torch.nn.Module, checkpoint_path: str | os.PathLike, size: tuple[int, int],
            device: torch.device, repeats: int = 10) -> Profile:
    device = getattr(model, "runs_on", device)
    arch = getattr(model, "float_model", model)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    return Profile(
        params=count_params(arch),
        size_mb=Path(checkpoint_path).stat().st_size / 1e6,
        gflops=gflops(arch, size, next(arch.parameters()).device),
        latency_ms=latency_ms(model, size, device, repeats=repeats, warmup=min(2, repeats)),
        device=device_name(device),
        threads=torch.get_num_threads(),
        precision=getattr(model, "precision", None) or ("bf16-autocast" if device.type == "cuda" else "fp32"),
        resolution=f"{size[0]}x{size[1]}",
        peak_memory_mb=torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None,
    )
