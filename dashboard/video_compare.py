"""Two models over one video: every frame predicted once, the predictions kept (compressed) so any
frame can be re-rendered with other view settings, and H.264 MP4s written for each model and
side by side. Plain functions: the Compare page passes in the two models' predict functions."""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dashboard.media import decode_png_or_jpeg, encode_jpeg, encode_png
from engine import render, video

Predict = Callable[[list[np.ndarray]], list[np.ndarray]]  # RGB frames -> trainIds each (Segmenter.predict_batch)
BATCH = 4  # frames per model call
OUTPUTS = ("a", "b", "side_by_side")


@dataclass
class VideoComparison:
    fps: float
    frames: list[bytes] = field(default_factory=list)    # JPEG of each processed frame
    labels_a: list[bytes] = field(default_factory=list)  # PNG trainId maps (lossless, small)
    labels_b: list[bytes] = field(default_factory=list)
    seconds_a: float = 0.0                                # total model time, all frames
    seconds_b: float = 0.0
    videos: dict[str, Path] = field(default_factory=dict)  # OUTPUTS -> written MP4
    view: tuple = ()                                      # (mode, alpha, visible) the MP4s were rendered with

    def __len__(self) -> int:
        return len(self.frames)

    def frame(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(image, labels A, labels B) of processed frame i."""
        return (decode_png_or_jpeg(self.frames[i]), decode_png_or_jpeg(self.labels_a[i], labels=True),
                decode_png_or_jpeg(self.labels_b[i], labels=True))


def render_pair(image, la, lb, mode: str, alpha: float, visible) -> tuple[np.ndarray, np.ndarray]:
    """Both models' views of one frame."""
    return (render.render_view(mode, image, la, lb, alpha, visible),
            render.render_view(mode, image, lb, la, alpha, visible))


class _Writers:
    def __init__(self, out_dir: Path, fps: float):
        out_dir.mkdir(parents=True, exist_ok=True)
        self.paths = {name: out_dir / f"{name}.mp4" for name in OUTPUTS}
        self.writers = {name: video.VideoWriter(p, fps) for name, p in self.paths.items()}

    def write(self, out_a: np.ndarray, out_b: np.ndarray) -> None:
        self.writers["a"].write(out_a)
        self.writers["b"].write(out_b)
        self.writers["side_by_side"].write(render.side_by_side(out_a, out_b))

    def close(self) -> dict[str, Path]:
        for w in self.writers.values():
            w.close()
        return self.paths


def process_video(path, predict_a: Predict, predict_b: Predict, out_dir: Path, *, max_frames: int | None,
                  mode: str, alpha: float, visible, on_frame: Callable[[int], None] | None = None,
                  transform: Callable[[np.ndarray, int], np.ndarray] | None = None) -> VideoComparison:
    """Predict every frame (up to max_frames) with both models, write the three MP4s, keep the predictions.
    `transform(frame, index)`, when given, replaces each frame before the models see it (and is what
    is kept and drawn): the Compare page's corruption."""
    info = video.probe(path)
    result = VideoComparison(fps=info.fps or 25.0, view=(mode, alpha, tuple(visible)))
    writers = _Writers(Path(out_dir), result.fps)
    try:
        batch, done = [], 0
        for k, image in enumerate(video.read_frames(path, max_frames=max_frames)):
            batch.append(transform(image, k) if transform else image)
            if len(batch) == BATCH:
                done = _process_batch(batch, predict_a, predict_b, result, writers, (mode, alpha, visible), done, on_frame)
                batch = []
        if batch:
            _process_batch(batch, predict_a, predict_b, result, writers, (mode, alpha, visible), done, on_frame)
    finally:
        if result.frames:
            result.videos = writers.close()
    if not result.frames:
        raise video.VideoError(f"{Path(path).name}: no frames could be decoded")
    return result


def _process_batch(batch, predict_a, predict_b, result, writers, view, done, on_frame) -> int:
    t0 = time.perf_counter()
    labels_a = predict_a(batch)
    t1 = time.perf_counter()
    labels_b = predict_b(batch)
    result.seconds_a += t1 - t0
    result.seconds_b += time.perf_counter() - t1
    for image, la, lb in zip(batch, labels_a, labels_b):
        result.frames.append(encode_jpeg(image))
        result.labels_a.append(encode_png(la))
        result.labels_b.append(encode_png(lb))
        writers.write(*render_pair(image, la, lb, *view))
        done += 1
        if on_frame:
            on_frame(done)
    return done


def reencode(result: VideoComparison, out_dir: Path, *, mode: str, alpha: float, visible,
             on_frame: Callable[[int], None] | None = None) -> None:
    """Write the MP4s again with other view settings, from the kept predictions (no model runs)."""
    writers = _Writers(Path(out_dir), result.fps)
    for i in range(len(result)):
        writers.write(*render_pair(*result.frame(i), mode, alpha, visible))
        if on_frame:
            on_frame(i + 1)
    result.videos = writers.close()
    result.view = (mode, alpha, tuple(visible))
