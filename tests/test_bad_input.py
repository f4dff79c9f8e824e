"""Bad and odd input everywhere input enters: the image decoder, `segment` and `coverage` on a
folder of broken files, dataset loading and dashboard uploads. The corpus is generated here
(nothing binary is committed): each file gets a correct result or one clear line naming it."""
from __future__ import annotations

import csv
import io
import os
import re
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
from PIL import Image, TiffImagePlugin, features

from engine import images, video
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


# TIFF (cameras, scanners, GIS exports), PNM and JPEG 2000: the same picture as the PNG, or one line.
def _tiff_pages(pages: list[tuple[Image.Image, int]], **kw) -> bytes:
    """A TIFF with one page (IFD) per (image, NewSubfileType): 0 a picture, 1 a reduced-resolution copy."""
    buf = io.BytesIO()
    with TiffImagePlugin.AppendingTiffWriter(buf, new=True) as tf:
        for img, subfile_type in pages:
            img.save(tf, "TIFF", tiffinfo={254: subfile_type}, **kw)
            tf.newFrame()
    return buf.getvalue()


def _tiff_flavours() -> dict[str, tuple[bytes, np.ndarray, float]]:
    """name -> (file, the RGB the decoder must give, the mean difference allowed)."""
    import cv2

    rgb = _scene()
    img = Image.fromarray(rgb)
    gray = np.array(img.convert("L"))
    bw = np.array(img.convert("1"), np.uint8) * 255
    rgba = np.dstack([rgb, np.full((48, 96), 128, np.uint8)])
    on_white = np.rint((rgb.astype(np.float32) * 128 + 255 * 127) / 255)  # alpha 128 composited on white
    deep = cv2.imencode(".tiff", (rgb.astype(np.uint16) * 257)[:, :, ::-1])[1].tobytes()  # 16-bit RGB, LZW
    return {
        "rgb.tiff": (_encode(img, "TIFF"), rgb, 0),
        "lzw.tif": (_encode(img, "TIFF", compression="tiff_lzw"), rgb, 0),
        "deflate.tif": (_encode(img, "TIFF", compression="tiff_adobe_deflate"), rgb, 0),
        "packbits.tif": (_encode(img, "TIFF", compression="packbits"), rgb, 0),
        "jpeg.tif": (_encode(img, "TIFF", compression="jpeg", quality=95), rgb, 6),
        "gray.tif": (_encode(img.convert("L"), "TIFF"), np.repeat(gray[:, :, None], 3, 2), 0),
        "bw.tif": (_encode(img.convert("1"), "TIFF", compression="group4"), np.repeat(bw[:, :, None], 3, 2), 0),
        "palette.tif": (_encode(img.convert("P"), "TIFF"), np.array(img.convert("P").convert("RGB")), 0),
        "cmyk.tif": (_encode(img.convert("CMYK"), "TIFF", compression="tiff_lzw"), rgb, 1),
        "rgba.tif": (_encode(Image.fromarray(rgba), "TIFF"), on_white, 0.5),
        "rgb16.tif": (deep, rgb, 0),
        "photo.ppm": (_encode(img, "PPM"), rgb, 0),
        "gray.pgm": (_encode(img.convert("L"), "PPM"), np.repeat(gray[:, :, None], 3, 2), 0),
        "bw.pbm": (_encode(img.convert("1"), "PPM"), np.repeat(bw[:, :, None], 3, 2), 0),
        **({"ortho.jp2": (_encode(img, "JPEG2000", irreversible=False), rgb, 0),
            "ortho.j2k": (_encode(img, "JPEG2000", no_jp2=True, quality_mode="dB", quality_layers=[40]), rgb, 3)}
           if features.check_codec("jpg_2000") else {}),
    }


@pytest.mark.parametrize("name", list(_tiff_flavours()))
def test_tiff_pnm_and_jpeg2000_give_the_picture(name):
    data, expected, tolerance = _tiff_flavours()[name]
    out = decode_image(data, name)
    assert out.shape == (48, 96, 3) and out.dtype == np.uint8 and out.flags.writeable
    assert np.abs(out.astype(float) - expected).mean() <= tolerance, name


def test_the_suffix_list_is_the_decoders_everywhere():
    from dashboard import media
    from engine.segment import IMAGE_SUFFIXES

    assert {".tif", ".tiff", ".ppm", ".pgm", ".pbm"} <= set(images.SUFFIXES)
    assert IMAGE_SUFFIXES is images.SUFFIXES and media.IMAGE_TYPES == [s[1:] for s in images.SUFFIXES]
    assert media.kind_of("SCAN.TIFF") == "image" and media.kind_of("frame.ppm") == "image"
    assert set(images.FORMATS.values()) == set(images.FORMAT_NAMES.split(", "))
    with pytest.raises(ImageError, match="the content is not PNG, JPEG, .*TIFF, PNM"):
        decode_image(b"shopping list\n" * 20, "notes.tif")
    with pytest.raises(ImageError, match=f"icon.ico: a ICO file; use {re.escape(images.FORMAT_NAMES)}$"):
        decode_image(_encode(Image.fromarray(_scene()), "ICO"), "icon.ico")


def test_16_bit_tiff_and_pgm_are_scaled_to_8_bits_not_clipped():
    ramp = np.linspace(0, 65535, 256).astype(np.uint16)[None].repeat(4, 0)
    for fmt in ("TIFF", "PPM"):
        data = _encode(Image.fromarray(ramp), fmt)
        out = decode_image(data, f"deep.{fmt.lower()}")[0, :, 0].astype(int)
        assert out[0] == 0 and out[-1] == 255 and np.all(np.diff(out) >= 0) and len(set(out)) > 200, fmt
    dark = _encode(Image.fromarray(np.full((4, 4), 200, np.uint16)), "PPM")  # 16-bit, all values small: dark
    assert (decode_image(dark, "dark.pgm") == 1).all()


def test_transparent_tiff_is_composited_on_white():
    transparent = np.zeros((8, 8, 4), np.uint8)
    assert (decode_image(_encode(Image.fromarray(transparent), "TIFF"), "t.tif") == 255).all()


def test_a_multi_page_tiff_is_refused_in_one_line():
    pages = [(Image.fromarray(_scene(seed=k)), 0) for k in range(3)]
    for kw in ({}, {"compression": "tiff_lzw"}):
        with pytest.raises(ImageError) as err:
            decode_image(_tiff_pages(pages, **kw), "scan.tif")
        assert str(err.value) == "scan.tif: a multi-page TIFF (3 pages); give one page"


def test_a_pyramidal_tiff_is_one_picture_its_full_resolution_page():
    rgb = _scene()
    page1 = Image.fromarray(rgb)
    levels = [(page1, 0), (page1.resize((48, 24)), 1), (page1.resize((24, 12)), 1)]
    for kw in ({}, {"compression": "tiff_lzw"}):
        assert np.array_equal(decode_image(_tiff_pages(levels, **kw), "ortho.tif"), rgb)
    # a reduced-resolution page first (a thumbnail): the full-resolution page is the picture
    assert np.array_equal(decode_image(_tiff_pages(levels[::-1]), "thumb_first.tif"), rgb)
    # two full-resolution pages, each with its reduced copy: still a document
    with pytest.raises(ImageError, match="a multi-page TIFF \\(2 pages\\)"):
        decode_image(_tiff_pages(levels[:2] * 2), "two.tif")


def test_a_tiff_over_the_pixel_limit_is_refused_from_its_header(monkeypatch):
    page1 = Image.fromarray(_scene())  # 96x48 = 4608 pixels
    for data in (_encode(page1, "TIFF"), _tiff_pages([(page1, 0), (page1.resize((48, 24)), 1)])):
        with Image.open(io.BytesIO(data)) as img:
            header_only = data[: img.tile[0].offset]  # page 1's header, not one pixel of it
        with pytest.raises(ImageError, match="bomb.tif: unreadable or corrupt image"):  # decoding it would fail
            decode_image(header_only, "bomb.tif")
        monkeypatch.setenv("SEGBENCH_MAX_PIXELS", "4000")  # ... so this error proves nothing was decoded
        with pytest.raises(ImageError) as err:
            decode_image(header_only, "bomb.tif")
        assert str(err.value) == ("bomb.tif: 96x48 is 0.0 million pixels, over the limit of 0.004 million "
                                  "(SEGBENCH_MAX_PIXELS)")
        monkeypatch.delenv("SEGBENCH_MAX_PIXELS")


@pytest.mark.parametrize("kw", [{}, {"compression": "tiff_lzw"}], ids=["raw", "lzw"])
def test_a_truncated_tiff_is_one_line(kw):
    data = _encode(Image.fromarray(_scene()), "TIFF", **kw)
    for cut in (len(data) // 2, len(data) - 10, 12):
        with pytest.raises(ImageError) as err:
            decode_image(data[:cut], "cut.tif")
        msg = str(err.value)
        assert msg.startswith("cut.tif: ") and "\n" not in msg
        assert "truncated" in msg or "a TIFF this decoder cannot read" in msg, msg


def test_tiffs_pillow_cannot_decode_or_that_would_be_wrong_are_one_line():
    import cv2

    rgb = _scene()
    float_rgb = cv2.imencode(".tiff", rgb[:, :, ::-1].astype(np.float32) / 255)[1].tobytes()
    cases = {
        "hdr.tif": (float_rgb, "a TIFF this decoder cannot read (a pixel layout such as floating-point colour"),
        "depth.tif": (_encode(Image.fromarray(rgb[:, :, 0].astype(np.float32)), "TIFF"), "floating-point pixels"),
        "counts.tif": (_encode(Image.fromarray(rgb[:, :, 0].astype(np.int32) * 70000), "TIFF"),
                       "32-bit or signed integer pixels"),
    }
    for name, (data, expected) in cases.items():
        with pytest.raises(ImageError) as err:
            decode_image(data, name)
        msg = str(err.value)
        assert msg.startswith(f"{name}: ") and expected in msg and "\n" not in msg, msg


def test_segment_gives_a_tiff_the_labels_of_the_same_png(ckpt, tmp_path):
    from engine.cli import main

    src = tmp_path / "in"
    src.mkdir()
    img = Image.fromarray(_scene(seed=3))
    img.save(src / "street.png")
    img.save(src / "street.tiff", compression="tiff_lzw")
    out = tmp_path / "out"
    assert main(["segment", "--checkpoint", str(ckpt), "--device", "cpu", "--precision", "fp32", "--input", str(src),
                 "--output", str(out), "--quiet"]) == 0
    png = np.array(Image.open(out / "street.png_trainIds.png"))
    tiff = np.array(Image.open(out / "street.tiff_trainIds.png"))
    assert png.shape == (48, 96) and np.array_equal(png, tiff)


def _valid_images() -> list[bytes]:
    rgb = _scene(64, 32)
    img = Image.fromarray(rgb)
    return [_encode(img, "PNG"), _encode(img, "JPEG"), _encode(img, "WEBP"), _encode(img, "BMP"), _phone_jpeg(rgb),
            _encode(img, "TIFF"), _tiff_pages([(img, 0), (img.resize((32, 16)), 1)], compression="tiff_lzw"),
            _encode(img, "PPM")] + ([_encode(img, "JPEG2000")] if features.check_codec("jpg_2000") else [])


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
    assert "fake.mp4: a video needs its GPX track (--gpx)" in res.stderr and "bomb.png: 100000x100000" in res.stderr
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
