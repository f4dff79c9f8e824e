"""`python -m engine bench`: the fast inference path against a plain baseline, side by side in one run.

For each variant and frame size, on one synthetic street video:
- baseline: `InferenceOptions.baseline()` (eager fp32, contiguous NCHW, one frame at a time) in a
  sequential loop: read frame, forward, argmax, colour (the same lookup-table overlay), encode.
- fast: the chosen `InferenceOptions` (channels_last, batches, precision, backend) in the
  overlapped pipeline of `engine.segment.segment_video`.
Both run the model at the frame's own size (a derived model's baseline is the trained model it was
made from: `bench_video`). Reported: model-only ms per frame, end-to-end frames
per second, their ratios, and the pixel agreement of the two label outputs; each row is
recorded in the store's benchmarks table (kind "video") with device, threads, precision, backend
and torch version.
"""
from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from engine import checkpoints, video
from engine.data.synthetic import render_scene
from engine.inference import InferenceOptions, Segmenter
from engine.profiling import device_name
from engine.segment import segment_video


def synthetic_clip(path: Path, size: tuple[int, int], frames: int, seed: int = 0, fps: float = 10.0) -> Path:
    """A street scene panned sideways, `frames` frames of `size` (W, H), as H.264 MP4."""
    w, h = size
    scene = render_scene(np.random.default_rng(seed), w + w // 4, h)[0]
    step = max(1, (w // 4) // max(1, frames - 1))
    video.write_video(path, (np.ascontiguousarray(scene[:, k * step:k * step + w]) for k in range(frames)), fps)
    return path


def model_ms_per_frame(seg: Segmenter, frame: np.ndarray, batch: int, repeats: int = 3) -> float:
    """Median model-only time (resize, forward, upsample, argmax) per frame, after one warm-up."""
    frames = [frame] * batch
    seg.predict_batch(frames)
    times = []
    for _ in range(repeats):
        if seg.device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        seg.predict_batch(frames)
        if seg.device.type == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) / batch)
    return statistics.median(times) * 1000


def bench_video(variant: str, *, size: tuple[int, int], frames: int, options: InferenceOptions,
                device: str = "auto", weights_dir=None, repeats: int = 3, workdir: Path | None = None) -> dict:
    """A derived model (pruned, INT8) is measured against the trained model it was made from: the
    baseline is that model's eager fp32, the agreement is with its labels, and the row also holds
    that model's own fast path (`parent_fast_fps`, `speedup_vs_parent_fast`)."""
    ckpt = checkpoints.resolve(variant, None, weights_dir)
    root = checkpoints.trained_root(ckpt, weights_dir)
    base = Segmenter(root, device, input_size=size, options=InferenceOptions.baseline())
    fast = Segmenter(ckpt, device, input_size=size, options=options)
    parent_fast = Segmenter(root, device, input_size=size, options=options) if root != ckpt else None
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        tmp = Path(tmp)
        clip = synthetic_clip(tmp / "clip.mp4", size, frames)
        first = next(video.read_frames(clip))
        base_ms = model_ms_per_frame(base, first, 1, repeats)
        fast_ms = model_ms_per_frame(fast, first, fast.options.batch_size, repeats)
        b = segment_video(base, clip, tmp / "baseline.mp4", overlapped=False, keep_labels=True)
        f = segment_video(fast, clip, tmp / "fast.mp4", overlapped=True, keep_labels=True)
        p = segment_video(parent_fast, clip, tmp / "parent.mp4", overlapped=True) if parent_fast else None
    agreement = float(np.mean([np.mean(x == y) for x, y in zip(b["labels"], f["labels"])]))
    versus = {} if p is None else {"parent_fast_fps": p["fps"], "speedup_vs_parent_fast": f["fps"] / p["fps"],
                                   "parent_precision": parent_fast.precision}
    return {"variant": variant, "size": f"{size[0]}x{size[1]}", "frames": b["frames"],
            "baseline_variant": base.ckpt["recipe"]["name"],
            "baseline_model_ms": base_ms, "fast_model_ms": fast_ms, "model_speedup": base_ms / fast_ms,
            "baseline_fps": b["fps"], "fast_fps": f["fps"], "speedup": f["fps"] / b["fps"], **versus,
            "agreement": agreement,
            "device": device_name(fast.device), "threads": torch.get_num_threads(), "precision": fast.precision,
            "backend": fast.backend_name, "batch_size": fast.options.batch_size, "channels_last": options.channels_last,
            "rewrites": fast.rewrites, "calibration": fast.calibration, "torch_version": torch.__version__}


def record(store, row: dict, kind: str = "video") -> int:
    keys = ("variant", "size", "device", "threads", "precision", "backend", "torch_version")
    return store.record_benchmark(kind=kind, **{k: row[k] for k in keys},
                                  metrics={k: v for k, v in row.items() if k not in keys})
