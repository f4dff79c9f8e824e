"""What a model costs: parameters, checkpoint size, FLOPs, latency, peak memory.

FLOPs come from `torch.utils.flop_counter` (a multiply-add counts as 2 FLOPs) for one image at a
deployment resolution (`engine.settings.deploy_sizes()`: 1024x512 unless set otherwise), never at
the size a quick run happened to be trained or evaluated at. An INT8 model
(`engine.onnx_runtime.OnnxModel`) is counted on its float architecture (the same operations, in
integers) and timed where it runs (the CPU), as "int8". Latency is the median of repeated forward
passes of one batch after warm-up.

A figure is only comparable with another taken on the same setup: the device (its kind and name),
thread count (CPU), resolution and batch (`Profile.setup`). Precision is the model's own (fp32 on
the CPU, bf16 autocast on CUDA, int8 for an INT8 model) and is shown beside each figure: an INT8
model and the float model it was made from are timed on the same setup.
"""
from __future__ import annotations

import copy
import os
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from engine.runtime import autocast
from engine.setups import setup_key


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
    batch: int = 1            # images per timed forward
    device_type: str = "cpu"  # cpu | cuda

    @property
    def setup(self) -> str:
        return setup_key(self.device_type, self.device, self.threads, self.resolution, self.batch)


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


def gflops(model: torch.nn.Module, size: tuple[int, int]) -> float:
    """GFLOPs of one image at `size` (W, H), counted on a copy of the model on the meta device: the
    shapes alone, no arithmetic (a second, not a forward pass at 1024x512 on a CPU)."""
    meta = copy.deepcopy(model).to("meta").eval()
    x = torch.zeros(1, 3, size[1], size[0], device="meta")
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        meta(x)
    return counter.get_total_flops() / 1e9


def latency_ms(model: torch.nn.Module, size: tuple[int, int], device: torch.device, repeats: int = 10,
               warmup: int = 2, batch: int = 1) -> float:
    x = torch.randn(batch, 3, size[1], size[0], device=device)
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
            device: torch.device, repeats: int = 10, batch: int = 1) -> Profile:
    """What `model` (its checkpoint at `checkpoint_path`) costs at `size` (W, H) on `device`: FLOPs of
    one image, the median latency of a forward of `batch` images."""
    device = getattr(model, "runs_on", device)
    arch = getattr(model, "float_model", model)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    return Profile(
        params=count_params(arch),
        size_mb=Path(checkpoint_path).stat().st_size / 1e6,
        gflops=gflops(arch, size),
        latency_ms=latency_ms(model, size, device, repeats=repeats, warmup=min(2, repeats), batch=batch),
        device=device_name(device),
        threads=torch.get_num_threads(),
        precision=getattr(model, "precision", None) or ("bf16-autocast" if device.type == "cuda" else "fp32"),
        resolution=f"{size[0]}x{size[1]}",
        peak_memory_mb=torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None,
        batch=int(batch),
        device_type=device.type,
    )
