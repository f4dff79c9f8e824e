"""Segmenting images, folders and videos with a `Segmenter`: overlays and label maps on disk.

Videos run as a pipeline when `overlapped` (the fast path): a reader thread decodes frames, the
main thread runs the model on batches and colours them by lookup table, a writer thread encodes
the H.264 overlay and writes the label maps, so decoding, inference and encoding overlap. With
`overlapped=False` the same steps run one frame after another (the benchmark's baseline).
"""
from __future__ import annotations

import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePath

import cv2
import numpy as np

from engine import render, video
from engine.images import SUFFIXES as IMAGE_SUFFIXES
from engine.images import read_image
from engine.inference import Segmenter

_DONE = object()


@dataclass(frozen=True)
class Input:
    """A file to segment and where its outputs go: `out_name` is relative to the output folder
    (the file's stem, or its whole name when another input has the same stem, under the
    sub-folders it had below a folder given as input), so two inputs never share an output name
    and no output lands outside the output folder."""
    path: Path
    out_name: PurePath


def expand_inputs(paths: Iterable[str | Path]) -> tuple[list[Input], list[str]]:
    """Files as given and the images and videos inside folders (recursively, sorted), plus one
    message for each path that cannot be used (missing, another file type, an empty folder, an
    output name taken by an earlier input): the caller processes the rest and reports those."""
    out: list[Input] = []
    problems: list[str] = []
    suffixes = IMAGE_SUFFIXES + video.VIDEO_SUFFIXES
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.suffix.lower() in suffixes and f.is_file())
            if not found:
                problems.append(f"{p}: no images or videos in this folder")
            out += [Input(f, PurePath(*f.relative_to(p).parent.parts, f.stem)) for f in found]
        elif not p.exists():
            problems.append(f"{p}: no such file or folder")
        elif p.suffix.lower() in suffixes:
            out.append(Input(p, PurePath(p.stem)))
        else:
            problems.append(f"{p}: unsupported file type {p.suffix or '(none)'}; images "
                            f"({', '.join(IMAGE_SUFFIXES)}) and videos ({', '.join(video.VIDEO_SUFFIXES)}) only")
    once = {i.path.resolve(): i for i in reversed(out)}  # the same file given twice: its first mention
    out = [i for i in out if once[i.path.resolve()] is i]
    stems = Counter(item.out_name for item in out)  # x.png next to x.jpg: both keep their suffix
    out = [Input(i.path, i.out_name.with_name(i.path.name)) if stems[i.out_name] > 1 else i for i in out]
    taken: dict[PurePath, Path] = {}
    unique = []
    for item in out:
        if item.out_name in taken:
            problems.append(f"{item.path}: skipped, its outputs would overwrite those of {taken[item.out_name]} "
                            f"(same name); rename one or give their folder instead")
            continue
        taken[item.out_name] = item.path
        unique.append(item)
    return unique, problems


def encode_png(array: np.ndarray) -> bytes:
    """RGB HxWx3 or single-channel HxW uint8 -> PNG bytes (OpenCV: several times faster than PIL)."""
    if array.ndim == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", array, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:
        raise ValueError("PNG encoding failed")
    return buf.tobytes()


def write_png(path: Path, array: np.ndarray) -> None:
    """RGB HxWx3 or single-channel uint8 as a PNG file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_png(array))


def segment_image(seg: Segmenter, src: Path, out_dir: Path, *, alpha=0.5, visible=None,
                  out_name: PurePath | None = None) -> dict:
    """<name>_overlay.png and <name>_trainIds.png (8-bit trainIds) for one image; <name> is
    `out_name` (default: the file's stem)."""
    image = read_image(src)
    t0 = time.perf_counter()
    labels = seg.predict(image)
    seconds = time.perf_counter() - t0
    stem = out_dir / (out_name or src.stem)
    write_png(stem.with_name(f"{stem.name}_overlay.png"), render.overlay(image, labels, alpha, visible))
    write_png(stem.with_name(f"{stem.name}_trainIds.png"), labels)
    return {"input": str(src), "frames": 1, "model_seconds": seconds, "labels": [labels]}


def _reader(src: Path, q: queue.Queue, max_frames: int | None, errors: list, stop: threading.Event) -> None:
    try:
        for frame in video.read_frames(src, max_frames=max_frames):
            if stop.is_set():
                break
            q.put(frame)
    except BaseException as e:  # handed to the main thread
        errors.append(e)
    finally:
        q.put(_DONE)


def _writer(q: queue.Queue, writer: video.VideoWriter, label_dir: Path | None, errors: list) -> None:
    k = 0
    try:
        while (item := q.get()) is not _DONE:
            overlay, labels = item
            writer.write(overlay)
            if label_dir is not None:
                write_png(label_dir / f"{k:06d}.png", labels)
            k += 1
    except BaseException as e:
        errors.append(e)
        while q.get() is not _DONE:  # keep draining so the producer never blocks
            pass


def _frames_in_batches(q: queue.Queue, size: int) -> Iterator[list[np.ndarray]]:
    batch = []
    while (frame := q.get()) is not _DONE:
        batch.append(frame)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def segment_video(seg: Segmenter, src: Path, dst: Path, *, alpha=0.5, visible=None, label_dir: Path | None = None,
                  overlapped: bool = True, max_frames: int | None = None, keep_labels: bool = False,
                  keep_overlays: bool = False, on_frames: Callable[[int], None] | None = None) -> dict:
    """The overlay video (H.264 MP4) of `src` at `dst`, and each frame's trainIds as
    `label_dir/NNNNNN.png` when given. Returns frames, seconds, fps, model_seconds, and, for
    comparing two runs, the label maps (`keep_labels`) and the overlay frames exactly as handed to
    the encoder, in order (`keep_overlays`). Compare those, not the MP4s: libx264 is not
    bit-deterministic from run to run at frame sizes that are not multiples of 16."""
    info = video.probe(src)
    t0 = time.perf_counter()
    model_s, n, kept, overlays = 0.0, 0, [], []
    errors: list[BaseException] = []
    writer = video.VideoWriter(dst, info.fps or 25.0)
    try:
        if overlapped:
            frames_q, out_q = queue.Queue(maxsize=4 * seg.options.batch_size), queue.Queue(maxsize=4 * seg.options.batch_size)
            stop = threading.Event()
            threads = [threading.Thread(target=_reader, args=(src, frames_q, max_frames, errors, stop), daemon=True),
                       threading.Thread(target=_writer, args=(out_q, writer, label_dir, errors), daemon=True)]
            for t in threads:
                t.start()
            try:
                for batch in _frames_in_batches(frames_q, seg.options.batch_size):
                    t = time.perf_counter()
                    labels = seg.predict_batch(batch)
                    model_s += time.perf_counter() - t
                    for frame, lab in zip(batch, labels):
                        out_q.put((overlay := render.overlay(frame, lab, alpha, visible), lab))
                        overlays += [overlay] if keep_overlays else []
                    kept += labels if keep_labels else []
                    n += len(batch)
                    if on_frames:
                        on_frames(n)
            except BaseException:
                stop.set()  # the reader stops at its next frame; drain so it is never stuck on a full queue
                while threads[0].is_alive() or not frames_q.empty():
                    try:
                        frames_q.get(timeout=0.1)
                    except queue.Empty:
                        pass
                raise
            finally:
                out_q.put(_DONE)
                for t in threads:
                    t.join()
        else:
            for frame in video.read_frames(src, max_frames=max_frames):
                t = time.perf_counter()
                lab = seg.predict(frame)
                model_s += time.perf_counter() - t
                writer.write(overlay := render.overlay(frame, lab, alpha, visible))
                overlays += [overlay] if keep_overlays else []
                if label_dir is not None:
                    write_png(label_dir / f"{n:06d}.png", lab)
                kept += [lab] if keep_labels else []
                n += 1
                if on_frames:
                    on_frames(n)
        if errors:
            raise errors[0]
        writer.close()
    except BaseException:
        writer.abort()  # no half-written video under the real name
        raise
    seconds = time.perf_counter() - t0
    return {"input": str(src), "output": str(dst), "frames": n, "seconds": seconds, "fps": n / seconds if seconds else 0.0,
            "model_seconds": model_s, "labels": kept, "overlays": overlays}
