"""Bad and odd input everywhere input enters: the image decoder, `segment` and `coverage` on a
folder of broken files, dataset loading and dashboard uploads. The corpus is generated here
(nothing binary is committed): each file gets a correct result or one clear line naming it."""
from __future__ import annotations

import csv
import io
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import av
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from engine import video
from engine.data.synthetic import render_scene
from engine.images import ImageError, decode_image, read_image

REPO = Path(__file__).resolve().parent.parent


def _scene(w=96, h=48, seed=0) -> np.ndarray:
    return render_scene(np.random.default_rng(seed), w, h)[0]


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _bomb_png(w=100_000, h=100_000) -> bytes:
    """A 1 kB PNG that declares 10 gigapixels (what a decompression bomb looks like from outside)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 1000)) + chunk(b"IEND", b""))


def _phone_jpeg(rgb: np.ndarray, orientation: int = 6) -> bytes:
    """A JPEG stored sideways with the EXIF orientation tag a phone writes (6: show rotated 90° clockwise)."""
    img = Image.fromarray(rgb)
    exif = img.getexif()
    exif[0x0112] = orientation
    return _encode(img, "JPEG", exif=exif.tobytes(), quality=95)


def _empty_video(path: Path) -> None:
    """An MP4 with a video stream header and not a single frame."""
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=10)
        s.width, s.height, s.pix_fmt = 64, 32, "yuv420p"
        c.start_encoding()


# name -> (bytes, expected): expected is the (H, W) of a correct result, or a piece of the error line
def corpus() -> dict[str, tuple[bytes, tuple[int, int] | str]]:
    rgb = _scene()
    png, jpeg = _encode(Image.fromarray(rgb), "PNG"), _encode(Image.fromarray(rgb), "JPEG")
    frames = [Image.fromarray(_scene(64, 32, s)).convert("P") for s in range(3)]
    gif = _encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    gray16 = np.linspace(0, 65535, 48 * 96).reshape(48, 96).astype(np.uint16)
    rgba = np.dstack([rgb, np.full((48, 96), 128, np.uint8)])
    return {
        "empty.png": (b"", "the file is empty"),
        "notes.png": (b"shopping list: milk, eggs\n" * 20, "unreadable or corrupt image (the content is not"),
        "cut.jpg": (jpeg[: len(jpeg) // 2], "unreadable or corrupt image (image file is truncated"),
        "cut.png": (png[: len(png) // 2], "unreadable or corrupt image"),
        "bomb.png": (_bomb_png(), "100000x100000 is 10000.0 million pixels, over the limit of 50 million"),
        "dot.png": (_encode(Image.fromarray(rgb[:1, :1]), "PNG"), (1, 1)),
        "strip.png": (_encode(Image.fromarray(np.tile(rgb[:20, :1], (1, 20000, 1))), "PNG"), (20, 20000)),
        "deep16.png": (_encode(Image.fromarray(gray16), "PNG"), (48, 96)),
        "gray.png": (_encode(Image.fromarray(rgb).convert("L"), "PNG"), (48, 96)),
        "palette.png": (_encode(Image.fromarray(rgb).convert("P"), "PNG"), (48, 96)),
        "alpha.png": (_encode(Image.fromarray(rgba), "PNG"), (48, 96)),
        "cmyk.jpg": (_encode(Image.fromarray(rgb).convert("CMYK"), "JPEG", quality=95), (48, 96)),
        "phone.jpg": (_phone_jpeg(rgb), (96, 48)),
        "animated.gif": (gif, "an animated image (3 frames)"),
        "straße_東京.png": (png, (48, 96)),
    }


VIDEOS = {"fake.mp4": "not a readable video", "noframes.mp4": "not a readable video (no video stream)"}


@pytest.fixture(scope="module")
def bad_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("inputs") / "in"
    d.mkdir()
    for name, (data, _) in corpus().items():
        (d / name).write_bytes(data)
    (d / "fake.mp4").write_bytes(b"this is not a video at all\n" * 10)
    _empty_video(d / "noframes.mp4")
    return d


@pytest.fixture(scope="module")
def ckpt(trained):
    return trained.weights / trained.variant / "best.pt"


@pytest.mark.parametrize("name", list(corpus()))
def test_the_decoder_gives_an_upright_rgb_image_or_one_clear_line(bad_dir, name):
    expected = corpus()[name][1]
    if isinstance(expected, str):
        with pytest.raises(ImageError) as err:
            read_image(bad_dir / name)
        msg = str(err.value)
        assert msg.startswith(f"{bad_dir / name}: ") and expected in msg and "\n" not in msg
    else:
        out = read_image(bad_dir / name)
        assert out.shape == (*expected, 3) and out.dtype == np.uint8 and out.flags.writeable


def test_cmyk_palette_and_alpha_keep_the_picture():
    rgb = _scene()
    cmyk = decode_image(_encode(Image.fromarray(rgb).convert("CMYK"), "JPEG", quality=95), "c.jpg")
    assert np.abs(cmyk.astype(int) - rgb).mean() < 6  # the colours survive (no inverted Adobe CMYK)
    transparent = np.zeros((8, 8, 4), np.uint8)  # fully transparent black -> white background, not black
    assert (decode_image(_encode(Image.fromarray(transparent), "PNG"), "t.png") == 255).all()


def test_exif_rotation_gives_the_orientation_the_user_sees():
    stored = np.zeros((40, 80, 3), np.uint8)
    stored[:, :40] = (255, 0, 0)   # left half red, right half blue, as stored in the file
    stored[:, 40:] = (0, 0, 255)
    shown = decode_image(_phone_jpeg(stored, orientation=6), "phone.jpg")  # 6: turn 90° clockwise to view
    assert shown.shape == (80, 40, 3)
    assert shown[:30, :, 0].mean() > 200 and shown[50:, :, 2].mean() > 200  # red on top, blue below


def test_16_bit_png_is_scaled_to_8_bits_not_clipped():
    ramp = np.linspace(0, 65535, 256).astype(np.uint16)[None].repeat(4, 0)
    out = decode_image(_encode(Image.fromarray(ramp), "PNG"), "deep.png")[0, :, 0].astype(int)
    assert out[0] == 0 and out[-1] == 255 and np.all(np.diff(out) >= 0) and len(set(out)) > 200


def test_the_pixel_limit_is_a_setting(monkeypatch):
    data = _encode(Image.fromarray(_scene()), "PNG")  # 96x48 = 4608 pixels
    monkeypatch.setenv("SEGBENCH_MAX_PIXELS", "4000")
    with pytest.raises(ImageError, match="96x48 is 0.0 million pixels, over the limit of 0.004 million"):
        decode_image(data, "x.png")
    monkeypatch.setenv("SEGBENCH_MAX_PIXELS", "4608")
    assert decode_image(data, "x.png").shape == (48, 96, 3)
    monkeypatch.setenv("SEGBENCH_MAX_PIXELS", "lots")
    with pytest.raises(ImageError, match="SEGBENCH_MAX_PIXELS must be a number"):
        decode_image(data, "x.png")


def _valid_images() -> list[bytes]:
    rgb = _scene(64, 32)
    return [_encode(Image.fromarray(rgb), "PNG"), _encode(Image.fromarray(rgb), "JPEG"),
            _encode(Image.fromarray(rgb), "WEBP"), _encode(Image.fromarray(rgb), "BMP"), _phone_jpeg(rgb)]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(base=st.sampled_from(_valid_images()), cuts=st.lists(st.tuples(st.integers(0, 10**6), st.binary(max_size=8)),
                                                            max_size=6), keep=st.integers(0, 10**6))
def test_fuzz_the_decoder_with_damaged_images(base, cuts, keep):
    """Real images with bytes overwritten and cut short: an RGB image or an ImageError, nothing else."""
    data = bytearray(base)
    for pos, patch in cuts:
        pos %= len(data)
        data[pos:pos + len(patch)] = patch
    _an_image_or_one_clear_line(bytes(data[: keep % (len(data) + 1)]), "fuzz.png")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2048))
def test_fuzz_the_decoder_with_arbitrary_bytes(data):
    _an_image_or_one_clear_line(data, "fuzz.jpg")


def _an_image_or_one_clear_line(data: bytes, name: str) -> None:
    try:
        out = decode_image(data, name)
    except ImageError as e:  # any other exception fails the test
        assert str(e).startswith(f"{name}: ") and "\n" not in str(e)
    else:
        assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3


def _engine(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "SEGBENCH_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "engine", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def test_segment_a_folder_of_broken_files_processes_the_good_ones_and_names_the_bad(bad_dir, ckpt, tmp_path):
    before = _files(bad_dir.parent)
    out = tmp_path / "out"
    # the folder, plus a path that climbs out and back in, a missing file and a text file
    (tmp_path / "list.txt").write_text("not an input")
    res = _engine("segment", "--checkpoint", str(ckpt), "--input", str(bad_dir), "--output", str(out),
                  "--input", str(bad_dir / ".." / "in" / "dot.png"), str(tmp_path / "missing.png"),
                  str(tmp_path / "list.txt"), "--quiet", cwd=tmp_path)
    assert res.returncode == 1, res.stderr
    assert "Traceback" not in res.stderr + res.stdout
    errors = [line for line in res.stderr.splitlines() if line.startswith("error: ")]
    bad = [n for n, (_, e) in corpus().items() if isinstance(e, str)] + list(VIDEOS)
    for name in bad:
        line = next((e for e in errors if f"{name}:" in e), None)
        assert line is not None, (name, res.stderr)
        assert (corpus()[name][1] if name in corpus() else VIDEOS[name]) in line
    assert any("missing.png: no such file" in e for e in errors)
    assert any("list.txt: unsupported file type .txt" in e for e in errors)
    assert len(errors) == len(bad) + 2  # dot.png, given twice, is segmented once
    assert f"{len(bad) + 2} of " in res.stderr and "input(s) failed" in res.stderr

    good = {n: e for n, (_, e) in corpus().items() if not isinstance(e, str)}
    for name, (h, w) in good.items():
        stem = Path(name).stem
        labels = np.array(Image.open(out / f"{stem}_trainIds.png"))
        assert labels.shape == (h, w), name
        assert np.array(Image.open(out / f"{stem}_overlay.png")).shape == (h, w, 3)
    written = _files(tmp_path) - {tmp_path / "list.txt"}
    assert all(p.is_relative_to(out) for p in written)            # nothing outside the output folder
    assert {p.name for p in written} == {f"{Path(n).stem}_{k}.png" for n in good for k in ("overlay", "trainIds")}
    assert _files(bad_dir.parent) == before                        # and nothing next to the inputs

    ok = _engine("segment", "--checkpoint", str(ckpt), "--input", str(bad_dir / "dot.png"),
                 str(bad_dir / "phone.jpg"), "--output", str(tmp_path / "ok"), "--quiet", cwd=tmp_path)
    assert ok.returncode == 0 and "error" not in ok.stderr and "2 input(s) segmented" in ok.stdout


def test_coverage_of_a_folder_with_broken_files_writes_the_good_ones(bad_dir, ckpt, tmp_path):
    res = _engine("coverage", "--checkpoint", str(ckpt), "--input", str(bad_dir), "--csv", str(tmp_path / "c.csv"),
                  "--quiet", cwd=tmp_path)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert "fake.mp4: a video; coverage takes images" in res.stderr and "bomb.png: 100000x100000" in res.stderr
    with open(tmp_path / "c.csv", newline="") as f:
        sources = {Path(r["source"]).name for r in csv.DictReader(f)}
    assert sources == {n for n, (_, e) in corpus().items() if not isinstance(e, str)}


def test_a_video_that_breaks_half_way_leaves_no_half_written_output(tmp_path, ckpt):
    from engine.inference import InferenceOptions, Segmenter
    from engine.segment import segment_video

    clip = tmp_path / "drive.mp4"
    video.write_video(clip, [_scene(seed=k) for k in range(12)], fps=5)
    seg = Segmenter(ckpt, "cpu", options=InferenceOptions(precision="fp32"))
    calls = []

    def stop_after_three(n):  # a failure in the middle of the video (here: the progress callback)
        calls.append(n)
        if n >= 3:
            raise ImageError("stopped on purpose")

    for overlapped in (True, False):
        out = tmp_path / f"out{overlapped}"
        with pytest.raises(ImageError):
            segment_video(seg, clip, out / "drive_overlay.mp4", overlapped=overlapped, on_frames=stop_after_three)
        assert not list(out.glob("*.mp4")) and not list(out.glob(".*.part")), list(out.iterdir())
    res = segment_video(seg, clip, tmp_path / "ok" / "drive_overlay.mp4")
    assert res["frames"] == 12 and [p.name for p in (tmp_path / "ok").iterdir()] == ["drive_overlay.mp4"]


def test_dataset_loading_names_a_broken_image(synth_root, tmp_path):
    import shutil

    from engine.data.cityscapes import CityscapesDataset, DatasetError
    from engine.data.transforms import EvalTransform

    root = tmp_path / "data"
    shutil.copytree(synth_root, root)
    victim = sorted((root / "leftImg8bit" / "val").rglob("*.png"))[0]
    victim.write_bytes(victim.read_bytes()[:200])
    ds = CityscapesDataset(root, "val", EvalTransform(None))
    with pytest.raises(DatasetError, match=f"{victim.name}: unreadable or corrupt image"):
        [ds[i] for i in range(len(ds))]
