"""The only place that reads and writes video files (PyAV, i.e. FFmpeg with libx264 bundled).

Frames are RGB uint8 HxWx3 arrays in and out. Written videos are H.264 / yuv420p in MP4 with the
index ('moov') at the front of the file, so a browser can start playing while downloading.
"""
from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from engine.errors import UserError

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov")


class VideoError(UserError, ValueError):
    """A video that cannot be read (missing, empty, corrupt, unsupported) or written; one-line message."""


@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    fps: float
    frames: int  # best estimate: the container's count, else duration * fps, else 0 (unknown)
    duration_s: float | None
    codec: str


def _unreadable(path, err: Exception) -> VideoError:
    reason = getattr(err, "strerror", None) or str(err) or type(err).__name__
    return VideoError(f"{Path(path).name}: not a readable video ({reason})")


def _open(path):
    """(container, first video stream), or VideoError."""
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError, UnicodeDecodeError) as e:
        raise _unreadable(path, e) from None
    if not container.streams.video:
        container.close()
        raise VideoError(f"{Path(path).name}: not a readable video (no video stream)")
    return container, container.streams.video[0]


def probe(path) -> VideoInfo:
    """Size, frame rate, frame count, duration and codec of the first video stream."""
    container, stream = _open(path)
    try:
        fps = float(stream.average_rate or stream.guessed_rate or 0)
        if stream.duration and stream.time_base:
            duration = float(stream.duration * stream.time_base)
        elif container.duration:
            duration = container.duration / av.time_base
        else:
            duration = None
        frames = stream.frames or (round(duration * fps) if duration and fps else 0)
        cc = stream.codec_context
        if not (cc.width and cc.height):
            raise VideoError(f"{Path(path).name}: not a readable video (unknown frame size)")
        return VideoInfo(cc.width, cc.height, fps, int(frames), duration, cc.name)
    finally:
        container.close()


def read_frames(path, *, max_frames: int | None = None, stride: int = 1) -> Iterator[np.ndarray]:
    """Yield every `stride`-th frame (0, stride, 2*stride...) as RGB uint8 HxWx3, at most `max_frames`.

    The file is opened on the first `next()`; it is closed when the frames run out, on error, and
    when the consumer stops early (the generator is closed or garbage-collected).
    """
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if max_frames is not None and max_frames < 0:
        raise ValueError(f"max_frames must be >= 0, got {max_frames}")
    if max_frames == 0:
        return
    container, stream = _open(path)
    stream.thread_type = "AUTO"  # frame + slice threads
    yielded = 0
    try:
        for i, frame in enumerate(container.decode(stream)):
            if i % stride:
                continue
            yield np.ascontiguousarray(frame.to_ndarray(format="rgb24"))
            yielded += 1
            if max_frames is not None and yielded >= max_frames:
                return
    except (av.FFmpegError, OSError) as e:
        raise _unreadable(path, e) from None
    finally:
        container.close()
    if yielded == 0:
        raise VideoError(f"{Path(path).name}: not a readable video (no frames)")


def frames_at(path, times: Iterable[float]) -> Iterator[tuple[float, np.ndarray]]:
    """For each of `times` (seconds from the first frame, increasing), the first frame shown at or after
    it, as (that frame's own time, RGB uint8 HxWx3); a frame is given once however many times fall on it,
    and times past the last frame are dropped. Decodes in order; only the frames given are converted."""
    wanted = iter(sorted(times))
    target = next(wanted, None)
    if target is None:
        return
    container, stream = _open(path)
    stream.thread_type = "AUTO"
    fps = float(stream.average_rate or stream.guessed_rate or 0) or 25.0
    start = None
    try:
        for i, frame in enumerate(container.decode(stream)):
            t = float(frame.time) if frame.time is not None else i / fps
            start = t if start is None else start
            t -= start
            if t + 1e-6 < target:
                continue
            yield t, np.ascontiguousarray(frame.to_ndarray(format="rgb24"))
            while target is not None and target <= t + 1e-6:
                target = next(wanted, None)
            if target is None:
                return
    except (av.FFmpegError, OSError) as e:
        raise _unreadable(path, e) from None
    finally:
        container.close()


class VideoWriter:
    """Write RGB uint8 frames to an H.264 MP4 (libx264, yuv420p, +faststart).

        with VideoWriter("out.mp4", fps=29.97) as w:
            for frame in frames:
                w.write(frame)

    The size is taken from the first frame and every later frame must match it (else ValueError).
    yuv420p needs even dimensions: an odd width/height is padded by replicating the last column/row,
    so a 63x47 input is stored as 64x48. Frames go to a hidden `.<name>.part` file next to `path`
    (created at the first frame), renamed to `path` when `close()` finishes it: a crash or an error
    never leaves a half-written video under the real name. Closing a writer that got no frame raises
    VideoError (an MP4 without frames plays nowhere); `abort()` (what leaving a `with` block on an
    exception does) drops the partial file.
    """

    def __init__(self, path, fps: float, *, crf: int = 23, preset: str = "veryfast"):
        if not (math.isfinite(fps) and fps > 0):
            raise ValueError(f"fps must be a positive number, got {fps}")
        self.path = Path(path)
        self.part = self.path.with_name(f".{self.path.name}.part")
        self.rate = Fraction(fps).limit_denominator(1001)
        self.crf, self.preset = crf, preset
        self.size: tuple[int, int] | None = None  # (height, width) of the input frames
        self.frames = 0
        self._container = self._stream = None
        self._closed = False

    def _start(self, height: int, width: int) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._container = av.open(str(self.part), "w", format="mp4", options={"movflags": "+faststart"})
        except (av.FFmpegError, OSError) as e:
            raise VideoError(f"{self.path.name}: cannot write video ({getattr(e, 'strerror', None) or e})") from None
        s = self._container.add_stream("libx264", rate=self.rate,
                                       options={"crf": str(self.crf), "preset": self.preset})
        s.width, s.height, s.pix_fmt = width + width % 2, height + height % 2, "yuv420p"
        self._stream = s
        self.size = (height, width)

    def write(self, frame: np.ndarray) -> None:
        """Encode one RGB uint8 HxWx3 frame."""
        frame = np.asarray(frame)
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f"expected an RGB uint8 HxWx3 frame, got {frame.dtype} {frame.shape}")
        h, w = frame.shape[:2]
        if self._closed:
            raise ValueError(f"{self.path.name}: write() after close()")
        if self._container is None:
            self._start(h, w)
        elif (h, w) != self.size:
            raise ValueError(f"frame {self.frames} is {w}x{h}, the video is {self.size[1]}x{self.size[0]}")
        if h % 2 or w % 2:
            frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        self._container.mux(self._stream.encode(vf))
        self.frames += 1

    def close(self) -> None:
        """Flush the encoder and finish the file; VideoError if no frame was written."""
        if self._closed:
            return
        self._closed = True
        if self._container is None:
            raise VideoError(f"{self.path.name}: no frames written")
        container, self._container = self._container, None
        try:
            container.mux(self._stream.encode(None))
            container.close()
        except BaseException:
            container.close()
            self.part.unlink(missing_ok=True)
            raise
        os.replace(self.part, self.path)

    def abort(self) -> None:
        """Stop without finishing: the partial file is removed, nothing appears under `path`."""
        self._closed = True
        if self._container is not None:
            container, self._container = self._container, None
            try:
                container.close()
            finally:
                self.part.unlink(missing_ok=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()  # keep the original error


def write_video(path, frames: Iterable[np.ndarray], fps: float, **kwargs) -> int:
    """Write all `frames` (RGB uint8 HxWx3) to an H.264 MP4; returns the number written.

    `kwargs` go to VideoWriter (crf, preset). No frames at all raises VideoError.
    """
    with VideoWriter(path, fps, **kwargs) as writer:
        for frame in frames:
            writer.write(frame)
    return writer.frames
