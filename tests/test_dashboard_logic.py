"""The dashboard's plain functions: frames, Pareto front, figures, uploads, the video comparison."""
from __future__ import annotations

import io
import zipfile
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dashboard import charts, media, tables, widgets
from dashboard.video_compare import process_video, reencode
from engine import render, video
from engine.classes import CLASS_NAMES, NUM_CLASSES, PALETTE
from engine.store import recipe_columns


def _row(run_id, variant, arch, miou, params, status="completed", dataset="synthetic", **extra):
    hp = {"model": {"dropout": 0.1}, "data": {"size": [64, 32], "batch_size": 4},
          "schedule": {"epochs": 3, "optimizer": {"name": "adam", "lr": 1e-4, "weight_decay": 0.0}},
          "description": f"{variant} recipe"}
    return {"run_id": run_id, "uid": f"{run_id:08x}{0:024x}", "variant": variant, "arch": arch, "backbone": "resnet50",
            "dataset": dataset, "status": status, "profile": "quick", "device": "cpu", "hyperparameters": hp,
            **recipe_columns(hp), "epochs_done": 3, "best_miou": miou, "miou": miou,
            "pixel_accuracy": 0.5, "params": params, "size_mb": params / 250_000 if params else None, "gflops": 2.0,
            "latency_ms": 100.0, "latency_device": "Xeon", "latency_threads": 2, "latency_precision": "fp32",
            "latency_resolution": "64x32", "train_seconds": 120.0, "images_per_second": 2.0,
            "started_at": datetime(2026, 1, 1, tzinfo=timezone.utc), "error": None, **extra}


@pytest.fixture
def frame():
    return tables.leaderboard_frame([
        _row(1, "a", "unet", 0.30, 30e6), _row(2, "b", "deeplabv3_r50", 0.50, 40e6),
        _row(3, "c", "hrnetv2_w48", 0.45, 65e6), _row(4, "d", "deeplabv3_r101", 0.60, 58e6),
        _row(5, "e", "unet", None, None, status="failed", error="diverged"),
        _row(6, "b", "deeplabv3_r50", 0.20, 40e6, dataset="cityscapes"),
    ])


def test_leaderboard_frame_converts_units_and_keeps_failures(frame):
    assert list(frame.columns[:1]) == ["run_id"] and set(tables.LEADERBOARD_COLUMNS) <= set(frame.columns)
    b = frame[frame["run_id"] == 2].iloc[0]
    assert b["params_m"] == pytest.approx(40.0) and b["train_minutes"] == pytest.approx(2.0)
    assert b["train_size"] == "64x32" and b["epochs_label"] == "3/3" and b["latency_setup"] == "Xeon, 64x32, 2 threads, fp32"
    failed = frame[frame["status"] == "failed"].iloc[0]
    assert failed["error"] == "diverged" and pd.isna(failed["miou"]) and pd.isna(failed["params_m"])
    assert len(tables.evaluated(frame)) == 5


def test_filters_and_labels(frame):
    assert set(tables.filter_runs(frame, datasets=["cityscapes"])["run_id"]) == {6}
    assert set(tables.filter_runs(frame, archs=["unet"], statuses=["failed"])["run_id"]) == {5}
    assert len(tables.filter_runs(frame)) == len(frame)
    labels = tables.run_labels(frame)
    assert labels[1] == "a" and labels[2] != labels[6] and labels[2].startswith("b · ")


def test_pareto_front_keeps_only_undominated_runs(frame):
    done = tables.evaluated(frame)
    front = charts.pareto_front(done[done["dataset"] == "synthetic"], "params_m")
    # a (30M, .30) -> b (40M, .50) -> d (58M, .60); c (65M, .45) is beaten by b and d
    assert list(front["variant"]) == ["a", "b", "d"]
    ties = pd.DataFrame({"x": [1.0, 1.0, 2.0, np.nan], "miou": [0.5, 0.4, 0.5, 0.9]})
    assert list(charts.pareto_front(ties, "x").index) == [0]  # same cost, lower mIoU; more cost, same mIoU; no cost


def test_tradeoff_figure_carries_run_ids_and_the_front(frame):
    done = tables.evaluated(frame)
    fig = charts.tradeoff_figure(done[done["dataset"] == "synthetic"], "params_m", log_x=True)
    points = [t for t in fig.data if t.mode == "markers"]
    assert sorted(int(c[0]) for t in points for c in t.customdata) == [1, 2, 3, 4]
    front = [t for t in fig.data if t.name == "Pareto front"][0]
    assert list(front.x) == [30.0, 40.0, 58.0] and fig.layout.xaxis.type == "log"
    assert fig.layout.xaxis.title.text == tables.EFFICIENCY_AXES["params_m"]
    alone = charts.tradeoff_figure(done[done["run_id"].isin([1, 4])].assign(miou=[0.6, 0.3]), "params_m")
    front = [t for t in alone.data if t.name == "Pareto front"][0]  # one run cheaper and better: a front of one
    assert list(front.x) == [30.0] and front.marker.symbol == "circle-open" and int(front.customdata[0][0]) == 1


def test_class_iou_matrix_heatmap_and_difference():
    rows = [{"run_id": r, "variant": v, "class_id": c, "class_name": n, "iou": (None if c == 5 else 0.1 * r + c / 100)}
            for r, v in ((1, "a"), (2, "b")) for c, n in enumerate(CLASS_NAMES)]
    m = tables.class_iou_matrix(rows, {2: "b", 1: "a"})
    assert list(m.index) == ["b", "a"] and list(m.columns) == CLASS_NAMES and np.isnan(m.loc["a", CLASS_NAMES[5]])
    heat = charts.class_iou_heatmap(m)
    assert heat.data[0].z.shape == (2, NUM_CLASSES) and heat.data[0].text[0][5] == ""
    assert [s.fillcolor for s in heat.layout.shapes] == charts.CLASS_COLORS  # the colour strip, one per class
    diff = charts.class_diff_figure(m, "a", "b")
    assert diff.data[0].y[0] == pytest.approx(0.1) and np.isnan(diff.data[0].y[5])
    assert list(diff.data[0].marker.color) == [f"rgb({r},{g},{b})" for r, g, b in PALETTE.tolist()]


def test_epochs_frame_and_curves():
    eps = {"a": [{"epoch": 1, "train_loss": 2.0, "val_loss": 2.1, "val_miou": 0.1}, {"epoch": 2, "train_loss": 1.5,
                                                                                     "val_loss": 1.9, "val_miou": 0.2}]}
    f = tables.epochs_frame(eps)
    assert list(f["epoch"]) == [1, 2] and list(f["run"]) == ["a", "a"]
    fig = charts.curves_figure(f)
    assert len(fig.data) == 3 and list(fig.data[2].y) == [0.1, 0.2]


def _png(arr, fmt="PNG", mode=None):
    buf = io.BytesIO()
    img = Image.fromarray(arr)
    (img.convert(mode) if mode else img).save(buf, format=fmt)
    return buf.getvalue()


def test_decode_image_any_format_and_clear_errors():
    rgb = np.random.default_rng(0).integers(0, 256, (37, 91, 3), dtype=np.uint8)
    for fmt in ("PNG", "BMP", "WEBP", "TIFF"):
        out = media.decode_image(f"x.{fmt.lower()}", _png(rgb, fmt) if fmt != "WEBP" else _webp_lossless(rgb))
        assert out.shape == (37, 91, 3) and out.dtype == np.uint8 and np.array_equal(out, rgb)
    assert media.decode_image("x.jpg", _png(rgb, "JPEG")).shape == (37, 91, 3)
    assert media.decode_image("x.png", _png(rgb, mode="RGBA")).shape == (37, 91, 3)
    assert media.decode_image("x.png", _png(rgb[..., 0])).shape == (37, 91, 3)  # greyscale
    with pytest.raises(media.UploadError, match="broken.png: unreadable or corrupt image"):
        media.decode_image("broken.png", b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(media.UploadError, match="empty"):
        media.decode_image("e.png", b"")
    with pytest.raises(media.UploadError, match="unsupported file type .heic"):
        media.kind_of("a.heic")
    assert media.kind_of("scan.TIF") == "image" and "tiff" in media.IMAGE_TYPES
    assert media.kind_of("still.gif") == "image"
    assert media.kind_of("A.JPEG") == "image" and media.kind_of("v.MOV") == "video" and media.kind_of("z.zip") == "zip"


def _webp_lossless(rgb):
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="WEBP", lossless=True)
    return buf.getvalue()


def test_expand_unpacks_zips_and_reports_what_it_skips():
    png = _png(np.zeros((4, 4, 3), np.uint8))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("scenes/b.png", png)
        z.writestr("scenes/a.jpg", _png(np.zeros((4, 4, 3), np.uint8), "JPEG"))
        z.writestr("notes.txt", "hello")
        z.writestr("__MACOSX/._b.png", "junk")
    ups = [media.Upload("one.png", png), media.Upload("bundle.zip", buf.getvalue()), media.Upload("x.heic", b"ftyp"),
           media.Upload("bad.zip", b"not a zip"), media.Upload("clip.mp4", b"...")]
    images, problems = media.expand(ups)
    assert [u.name for u in images] == ["one.png", "bundle.zip/scenes/a.jpg", "bundle.zip/scenes/b.png"]
    assert len(problems) == 4 and any("notes.txt" in p for p in problems) and any("x.heic" in p for p in problems)
    assert any("bad.zip: not a readable zip" in p for p in problems) and any("Compare page" in p for p in problems)


def test_png_roundtrip_of_images_and_label_maps():
    rgb = np.random.default_rng(1).integers(0, 256, (9, 13, 3), dtype=np.uint8)
    labels = np.random.default_rng(2).integers(0, NUM_CLASSES, (9, 13)).astype(np.uint8)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(media.encode_png(rgb)))), rgb)
    lab = Image.open(io.BytesIO(media.encode_png(labels)))
    assert lab.mode == "L" and np.array_equal(np.asarray(lab), labels)
    assert np.array_equal(media.decode_png_or_jpeg(media.encode_png(labels), labels=True), labels)


def test_legend_names_and_colours_each_class():
    html = widgets.legend_html([0, 13], {"A": [0.25] + [0.0] * 18, "B": [0.5] + [0.0] * 18})
    assert "road" in html and "car" in html and "rgb(128,64,128)" in html and "rgb(0,0,142)" in html
    assert "A 25%" in html and "B 50%" in html and "sidewalk" not in html


def test_render_view_modes():
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    a = rng.integers(0, NUM_CLASSES, (8, 8)).astype(np.uint8)
    b = a.copy()
    b[0, 0] = (a[0, 0] + 1) % NUM_CLASSES
    assert np.array_equal(render.render_view("overlay", image, a, b, 0.4), render.overlay(image, a, 0.4))
    assert np.array_equal(render.render_view("mask", image, a, b, 0.4, [1]), render.mask_only(a, [1]))
    dis = render.render_view("disagreement", image, a, b, 1.0)
    assert np.array_equal(dis[0, 0], PALETTE[a[0, 0]]) and np.array_equal(dis[1:], render.grey(image)[1:])
    with pytest.raises(ValueError, match="unknown view mode"):
        render.render_view("x-ray", image, a, b)


def test_video_comparison_predicts_each_frame_once_and_writes_playable_mp4s(tmp_path):
    yy, xx = np.mgrid[0:36, 0:50]
    frames = [np.stack([xx * 5 + 4 * k, yy * 7, np.full_like(xx, 90)], -1).astype(np.uint8) for k in range(6)]
    src = tmp_path / "clip.mp4"
    video.write_video(src, frames, fps=10)
    calls = {"a": 0, "b": 0}

    def model(name, cls):
        def predict(images):
            calls[name] += len(images)
            return [np.full(img.shape[:2], cls, np.uint8) for img in images]
        return predict

    seen = []
    res = process_video(src, model("a", 0), model("b", 13), tmp_path / "out", max_frames=5, mode="overlay",
                        alpha=1.0, visible=range(NUM_CLASSES), on_frame=seen.append)
    assert len(res) == 5 and calls == {"a": 5, "b": 5} and seen == [1, 2, 3, 4, 5]  # a batch of 4, then 1
    image, la, lb = res.frame(2)
    assert image.shape == (36, 50, 3) and (la == 0).all() and (lb == 13).all()
    for name, width in (("a", 50), ("b", 50), ("side_by_side", 108)):
        info = video.probe(res.videos[name])
        assert (info.codec, info.frames, info.width, info.height) == ("h264", 5, width, 36)
    first = next(video.read_frames(res.videos["a"]))
    assert np.abs(first.astype(int) - PALETTE[0]).mean() < 12  # alpha 1: all road colour
    reencode(res, tmp_path / "out", mode="overlay", alpha=0.0, visible=[])
    assert calls == {"a": 5, "b": 5} and res.view == ("overlay", 0.0, ())
    again = next(video.read_frames(res.videos["a"]))
    assert np.abs(again.astype(int) - frames[0]).mean() < 12  # alpha 0: the frame itself
    with pytest.raises(video.VideoError):
        (tmp_path / "bad.mp4").write_bytes(b"nope")
        process_video(tmp_path / "bad.mp4", model("a", 0), model("b", 0), tmp_path / "o2", max_frames=2,
                      mode="mask", alpha=0.5, visible=[0])


def test_benchmark_frame_keeps_the_latest_row_per_setup_and_plots_both_paths():
    def row(variant, size, fast, when):
        return {"variant": variant, "size": size, "device": "cpu", "threads": 2, "precision": "fp32",
                "backend": "torch", "created_at": when,
                "metrics": {"baseline_fps": 1.0, "fast_fps": fast, "speedup": fast, "agreement": 1.0, "batch_size": 4}}
    df = tables.benchmark_frame([row("a", "512x256", 2.0, 1), row("a", "512x256", 3.0, 2), row("b", "512x256", 1.5, 3),
                                 row("a", "1024x512", 2.5, 4)])
    assert len(df) == 3 and df[(df["variant"] == "a") & (df["size"] == "512x256")]["fast_fps"].item() == 3.0
    fig = charts.benchmark_figure(df)
    fast = [t for t in fig.data if t.name == "fast: torch fp32, batch 4"]
    assert len(fast) == 2 and list(fast[0].y) == [3.0, 1.5]  # one panel per size
    onnx = tables.benchmark_frame([row("a", "512x256", 2.0, 1), {**row("a", "512x256", 4.0, 2), "backend": "onnx"}])
    names = [t.name for t in charts.benchmark_figure(onnx).data]
    assert names == ["baseline (eager fp32, 1 frame)", "fast: torch fp32, batch 4", "fast: onnx fp32, batch 4"]
