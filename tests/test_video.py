"""engine.video on real files: H.264 round trip, faststart MP4, odd sizes, frame selection, other
containers, and a VideoError naming the file for every unreadable input."""
import struct

import av
import numpy as np
import pytest

from engine.video import VideoError, VideoInfo, VideoWriter, probe, read_frames, write_video

W, H, N = 64, 48, 12


def _frames(n=N, w=W, h=H):
    """A smooth colour gradient that moves a few pixels per frame (so every frame differs)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    out = []
    for i in range(n):
        r = 255 * ((x + 3 * i) % w) / w
        g = 255 * y / h
        b = np.full_like(x, 40 + 15 * i)
        out.append(np.stack([r, g, b], -1).clip(0, 255).astype(np.uint8))
    return out


def _top_level_boxes(path):
    """Types of the top-level MP4 boxes, in file order."""
    data, boxes, pos = path.read_bytes(), [], 0
    while pos + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if size == 1:
            size = struct.unpack(">Q", data[pos + 8:pos + 16])[0]
        elif size == 0:
            size = len(data) - pos
        assert size >= 8, f"bad box size {size} at {pos}"
        boxes.append(kind.decode("latin-1"))
        pos += size
    return boxes


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    frames = _frames()
    assert write_video(path, frames, fps=25) == N
    return path, frames


def test_round_trip_h264(clip):
    path, original = clip
    assert probe(path) == VideoInfo(W, H, 25.0, N, pytest.approx(N / 25, abs=0.05), "h264")
    frames = list(read_frames(path))
    assert len(frames) == N
    for got, want in zip(frames, original):
        assert got.dtype == np.uint8 and got.shape == (H, W, 3) and got.flags["C_CONTIGUOUS"]
        assert np.abs(got.astype(int) - want.astype(int)).mean() < 8
    # The frames come back in order: each is closest to its own original.
    errors = [[np.abs(g.astype(int) - w.astype(int)).mean() for w in original] for g in frames]
    assert [int(np.argmin(row)) for row in errors] == list(range(N))


def test_mp4_is_faststart_yuv420p(clip):
    path, _ = clip
    boxes = _top_level_boxes(path)
    assert "moov" in boxes and "mdat" in boxes
    assert boxes.index("moov") < boxes.index("mdat"), boxes
    with av.open(str(path)) as c:
        assert c.streams.video[0].codec_context.pix_fmt == "yuv420p"


def test_fractional_fps(tmp_path):
    path = tmp_path / "ntsc.mp4"
    write_video(path, _frames(10), fps=29.97)
    info = probe(path)
    assert info.fps == pytest.approx(29.97, abs=1e-3) and info.frames == 10


def test_odd_size_is_padded_to_even(tmp_path):
    path = tmp_path / "odd.mp4"
    original = _frames(10, w=63, h=47)
    assert write_video(path, original, fps=10) == 10
    info = probe(path)
    assert (info.width, info.height) == (64, 48)
    frames = list(read_frames(path))
    assert len(frames) == 10 and all(f.shape == (48, 64, 3) for f in frames)
    for got, want in zip(frames, original):
        got = got.astype(int)
        assert np.abs(got[:47, :63] - want).mean() < 8
        # The padding replicates the edge; black padding would differ by ~100 in red/green.
        assert np.abs(got[:47, 63] - want[:, 62]).mean() < 12
        assert np.abs(got[47, :63] - want[46]).mean() < 12


def test_stride_and_max_frames(clip):
    path, _ = clip
    every = list(read_frames(path))
    assert not np.array_equal(every[0], every[1])

    def same(a, b):
        return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))

    assert same(list(read_frames(path, stride=3)), every[::3])
    assert same(list(read_frames(path, max_frames=5)), every[:5])
    assert same(list(read_frames(path, stride=2, max_frames=4)), every[0:8:2])
    assert same(list(read_frames(path, max_frames=100)), every)
    assert list(read_frames(path, max_frames=0)) == []


def test_stopping_early_then_reading_again(clip):
    path, _ = clip
    gen = read_frames(path)
    first = next(gen)
    gen.close()
    assert np.array_equal(next(read_frames(path)), first)


@pytest.mark.parametrize("suffix", [".avi", ".mov"])
def test_reads_avi_and_mov(tmp_path, suffix):
    path = tmp_path / f"clip{suffix}"
    original = _frames(10)
    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=10)
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        for f in original:
            c.mux(s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        c.mux(s.encode(None))
    info = probe(path)
    assert (info.width, info.height, info.codec) == (W, H, "mpeg4")
    assert info.fps == pytest.approx(10)
    frames = list(read_frames(path))
    assert len(frames) == 10 and all(f.shape == (H, W, 3) and f.dtype == np.uint8 for f in frames)
    assert np.abs(frames[5].astype(int) - original[5].astype(int)).mean() < 12


def _corrupt(tmp_path):
    path = tmp_path / "corrupt.mp4"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 20_000, dtype=np.uint8).tobytes())
    return path


def _empty(tmp_path):
    path = tmp_path / "empty.mp4"
    path.write_bytes(b"")
    return path


def _missing(tmp_path):
    return tmp_path / "missing.mp4"


@pytest.mark.parametrize("make", [_corrupt, _empty, _missing])
@pytest.mark.parametrize("read", [probe, lambda p: list(read_frames(p))], ids=["probe", "read_frames"])
def test_unreadable_inputs_raise_video_error_naming_the_file(tmp_path, make, read):
    path = make(tmp_path)
    with pytest.raises(VideoError, match=path.name):
        read(path)


def test_truncated_video_fails_while_decoding(tmp_path):
    """The index (moov, at the front) is intact but the frame data is cut: probe works, decoding fails."""
    path = tmp_path / "truncated.mp4"
    write_video(path, _frames(10), fps=10)
    boxes = _top_level_boxes(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 3 // 4])
    assert boxes[-1] == "mdat" and probe(path).frames == 10
    with pytest.raises(VideoError, match="truncated.mp4"):
        list(read_frames(path))


def test_frames_of_different_sizes_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="32x24"):
        write_video(tmp_path / "mixed.mp4", [_frames(1)[0], _frames(1, w=32, h=24)[0]], fps=10)


def test_no_frames_raises_video_error(tmp_path):
    with pytest.raises(VideoError, match="no frames written"):
        write_video(tmp_path / "none.mp4", [], fps=10)
    assert not (tmp_path / "none.mp4").exists()


def test_writer_accepts_frames_one_by_one(tmp_path):
    path = tmp_path / "w.mp4"
    with VideoWriter(path, 12.5, crf=18, preset="ultrafast") as w:
        for f in _frames(5):
            w.write(f)
    assert w.frames == 5
    info = probe(path)
    assert info.fps == pytest.approx(12.5) and info.frames == 5
