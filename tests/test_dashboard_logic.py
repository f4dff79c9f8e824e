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
            "latency_resolution": "64x32", "cost_setup": "cpu|Xeon|2|64x32|1",
            "cost_setup_label": "Xeon (CPU, 2 threads), 64x32, batch 1", "train_seconds": 120.0, "images_per_second": 2.0,
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
    assert b["train_size"] == "64x32" and b["epochs_label"] == "3/3" and b["latency_setup"] == "Xeon (CPU, 2 threads), 64x32, batch 1, fp32"
    assert b["cost_resolution"] == "64x32"
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


@pytest.fixture
def published_rows():
    """The repository's published results as `Store.published()` returns them (best mIoU first)."""
    from engine.published import read_table

    return sorted(read_table(), key=lambda r: -r["miou"])


def test_published_frame_keeps_each_figure_with_its_setup_and_its_axes(published_rows):
    pub = tables.published_frame(published_rows)
    assert list(pub["key"]) == [r["key"] for r in published_rows] and list(pub.columns) == tables.PUBLISHED_COLUMNS
    row = pub.set_index("key").loc["hrnet-official-hrnetv2-w48-pytorch-v1.1-1024x512-484ep"]
    assert row["params_m"] == pytest.approx(65.8) and row["gflops_label"] == "696.2 at 2048x1024"
    assert row["fps_label"] == "6.67 fps on V100 at 2048x1024" and row["miou"] == 0.811
    assert pub.set_index("key").loc["mmseg-deeplabv3-r50-d8-1024x512-80k", ["params_m", "fps_label"]].isna().all()
    # on the axes a published row has a figure for, and on no other
    assert sorted(tables.published_on_axis(pub, "params_m")["params_m"]) == pytest.approx(
        [42.0, 65.0, 65.729107, 65.8, 65.858659, 84.721235])
    # GFLOPs only at the resolution the runs' GFLOPs are at: never two resolutions on one axis
    assert list(tables.published_on_axis(pub, "gflops", "2048x1024")["gflops"]) == [696.2]
    assert tables.published_on_axis(pub, "gflops", "1024x512").empty
    for x in ("latency_ms", "size_mb", "train_minutes"):
        assert tables.published_on_axis(pub, x).empty
    assert tables.published_frame([]).empty


def test_tradeoff_figure_overlays_published_results_as_hollow_markers_outside_the_front(frame, published_rows):
    done = tables.evaluated(frame)
    runs = done[done["dataset"] == "synthetic"]
    pub = tables.published_on_axis(tables.published_frame(published_rows), "params_m")
    fig = charts.tradeoff_figure(runs, "params_m", published=pub)
    hollow = [t for t in fig.data if t.name and t.name.endswith("· published")]
    assert sorted(t.name for t in hollow) == ["deeplabv3_r101 · published", "deeplabv3_r50 · published",
                                               "hrnetv2_w48 · published"]
    for t in hollow:
        arch = t.name.split(" · ")[0]
        assert t.marker.symbol == "circle-open" and t.marker.color == charts.ARCH_COLORS[arch]
        assert t.customdata is None  # nothing to pick for Compare
    hrnet = next(t for t in hollow if t.name.startswith("hrnetv2_w48"))
    assert sorted(zip(hrnet.x, hrnet.y)) == [(65.0, 0.741), (pytest.approx(65.8), 0.811),
                                             (pytest.approx(65.858659), 0.8065)]
    assert all("published" in h and "source: " in h for h in hrnet.hovertext)
    # the runs keep their colours and the front is theirs alone, though 0.811 beats every run
    plain = charts.tradeoff_figure(runs, "params_m")
    front = [t for t in fig.data if t.name == "Pareto front"][0]
    assert list(front.x) == list([t for t in plain.data if t.name == "Pareto front"][0].x) == [30.0, 40.0, 58.0]
    measured = [t for t in fig.data if t.customdata is not None and t.mode == "markers" and t.name != "Pareto front"]
    assert {t.name: t.marker.color for t in measured} == {t.name: t.marker.color for t in plain.data
                                                           if t.customdata is not None and t.mode == "markers"
                                                           and t.name != "Pareto front"}
    # published results are mIoU figures: on another accuracy axis, none
    assert not [t for t in charts.tradeoff_figure(runs.assign(mpc=0.2), "params_m", y="mpc", published=pub).data
                if "published" in (t.name or "")]


def test_published_caption_says_what_is_drawn_and_what_never_is(published_rows):
    pub = tables.published_frame(published_rows)
    full = "2048x1024"
    on = tables.published_caption(pub, tables.published_on_axis(pub, "gflops", full), "gflops", "miou", "synthetic", full)
    assert "Hollow markers" in on and "not measured here" in on and "never put against the latency" in on
    assert "at 2048x1024, as ours are" in on and "evaluated on synthetic, not on Cityscapes" in on
    half = "1024x512"
    off = tables.published_caption(pub, tables.published_on_axis(pub, "gflops", half), "gflops", "miou", "synthetic", half)
    assert off == ("No published GFLOPs at 1024x512 (the sources state theirs at 2048x1024): GFLOPs at different "
                   "resolutions are never drawn together.")
    latency = tables.published_caption(pub, tables.published_on_axis(pub, "latency_ms"), "latency_ms", "miou", "cityscapes")
    assert "parameters and GFLOPs only" in latency and "never put against the latency" in latency
    assert "mIoU axis only" in tables.published_caption(pub, None, "params_m", "mpc", "cityscapes")
    assert "published --load" in tables.published_caption(pub.iloc[0:0], None, "params_m", "miou", "cityscapes")


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


# ---------------------------------------------------------------- robustness

def _sweep(sweep_id, run_id, clean, results, *, dataset="synthetic", condition="", groups=None, variant=None):
    """A `Store.robustness()` row: results are (corruption, group, severity, miou, {class: iou})."""
    res = [{"corruption": c, "group": g, "severity": s, "miou": m, "pixel_accuracy": 0.5, "per_class_iou": pc}
           for c, g, s, m, pc in results]
    if groups is None:
        groups = {g: float(np.mean([r["miou"] for r in res if r["group"] == g])) for g in dict.fromkeys(r["group"] for r in res)}
    mpc = float(np.mean([r["miou"] for r in res]))
    return {"id": sweep_id, "run_id": run_id, "variant": variant or f"v{run_id}", "checkpoint": "best.pt",
            "checkpoint_sha256": "ab" * 32, "dataset": dataset, "condition": condition, "split": "val",
            "num_images": 2, "eval_size": "64x32", "library": "imagecorruptions-imaug 1.1.5",
            "clean_miou": clean["miou"], "clean_per_class_iou": clean["per_class"], "mpc": mpc,
            "rpc": mpc / clean["miou"] if clean["miou"] else None, "groups": groups,
            "created_at": datetime(2026, 1, sweep_id, tzinfo=timezone.utc), "results": res}


@pytest.fixture
def sweeps():
    clean_a = {"miou": 0.5, "per_class": {"road": 0.8, "sky": 0.4, "car": None, "person": 0.0}}
    a = _sweep(2, 1, clean_a, [
        ("gaussian_noise", "noise", 1, 0.4, {"road": 0.6, "sky": 0.2, "person": 0.1}),
        ("gaussian_noise", "noise", 3, 0.2, {"road": 0.4, "sky": 0.0, "person": 0.0}),
        ("fog", "weather", 1, 0.45, {"road": 0.8, "sky": None}),
        ("fog", "weather", 3, 0.35, {"road": 0.7, "sky": 0.2})])
    old_a = _sweep(1, 1, clean_a, [("fog", "weather", 1, 0.1, {"road": 0.1})])            # replaced by sweep 2
    fog_a = _sweep(3, 1, clean_a, [("fog", "weather", 1, 0.3, {"road": 0.3})], dataset="synthetic-acdc", condition="fog")
    b = _sweep(4, 2, {"miou": 0.25, "per_class": {"road": 0.5}}, [
        ("gaussian_noise", "noise", 1, 0.2, {"road": 0.4}), ("gaussian_noise", "noise", 3, 0.1, {"road": 0.2}),
        ("fog", "weather", 1, 0.25, {"road": 0.5}), ("fog", "weather", 3, 0.2, {"road": 0.45})])
    return [old_a, a, fog_a, b]


def test_robustness_tables_latest_sweep_curves_and_retention(sweeps):
    labels = {2: "b", 1: "a"}
    assert tables.sweep_targets(sweeps, labels, "synthetic") == [("synthetic", ""), ("synthetic-acdc", "fog")]
    latest = tables.latest_sweeps(sweeps, labels, "synthetic")
    assert [w["id"] for w in latest] == [4, 2]  # the latest of each run, in the order of the labels
    assert [w["id"] for w in tables.latest_sweeps(sweeps, labels, "synthetic-acdc", "fog")] == [3]

    summary = tables.robustness_summary(latest, labels)
    assert list(summary["run"]) == ["b", "a"] and list(summary["mpc"]) == [w["mpc"] for w in latest]
    assert summary.loc[1, "corruptions"] == "gaussian_noise, fog" and summary.loc[1, "severities"] == "1, 3"
    assert np.isnan(summary.loc[1, "blur"]) and summary.loc[1, "noise"] == pytest.approx(0.3)

    curves = tables.severity_curves(latest, labels)
    assert list(dict.fromkeys(curves["corruption"])) == ["gaussian_noise", "fog"]
    a_noise = curves[(curves["run"] == "a") & (curves["corruption"] == "gaussian_noise")]
    assert list(a_noise["severity"]) == [0, 1, 3] and list(a_noise["miou"]) == [0.5, 0.4, 0.2]  # 0: clean

    retention = tables.group_retention(latest, labels).set_index(["run", "group"])["retention"]
    assert retention["a", "noise"] == pytest.approx(0.3 / 0.5) and retention["b", "weather"] == pytest.approx(0.225 / 0.25)
    zero = dict(latest[1], clean_miou=0.0)
    assert tables.group_retention([zero], labels)["retention"].isna().all()  # no clean accuracy: no ratio

    by_run = tables.class_retention_by_run(latest, labels)
    assert list(by_run.index) == ["b", "a"] and list(by_run.columns) == CLASS_NAMES
    assert by_run.loc["a", "road"] == pytest.approx(np.mean([0.6, 0.4, 0.8, 0.7]) / 0.8)
    assert by_run.loc["a", "sky"] == pytest.approx(np.mean([0.2, 0.0, 0.2]) / 0.4)  # a missing IoU is skipped
    assert np.isnan(by_run.loc["a", "car"]) and np.isnan(by_run.loc["a", "person"])  # clean None, clean 0
    by_group = tables.class_retention_by_group(latest[1])
    assert list(by_group.index) == ["noise", "weather"] and by_group.loc["noise", "road"] == pytest.approx(0.5 / 0.8)
    assert tables.weakest_classes(by_run, 2)["a"] == [("sky", pytest.approx(1 / 3)), ("road", pytest.approx(0.625 / 0.8))]


def test_robustness_figures_carry_the_numbers(sweeps):
    labels = {1: "a", 2: "b"}
    latest = tables.latest_sweeps(sweeps, labels, "synthetic")
    summary = tables.robustness_summary(latest, labels)
    colors = charts.run_colors(summary["run"])
    fig = charts.mpc_figure(summary, colors)
    bars = {t.name: list(t.y) for t in fig.data}
    assert bars["mPC"] == [w["mpc"] for w in latest] and bars["rPC"] == [w["rpc"] for w in latest]
    assert bars["clean mIoU"] == [0.5, 0.25] and list(fig.data[1].marker.color) == [colors["a"], colors["b"]]

    sev = charts.severity_figure(tables.severity_curves(latest, labels), colors)
    assert [a.text for a in sev.layout.annotations] == ["gaussian_noise (noise)", "fog (weather)"]
    assert len(sev.data) == 4 and {t.line.color for t in sev.data if t.name == "a"} == {colors["a"]}
    assert list(sev.layout.xaxis.ticktext) == ["clean", "1", "2", "3", "4", "5"]

    ret = charts.group_retention_figure(tables.group_retention(latest, labels), colors)
    assert [t.name for t in ret.data] == ["a", "b"] and list(ret.data[0].x) == ["noise", "weather"]
    assert list(ret.data[0].y) == pytest.approx([0.3 / 0.5, 0.4 / 0.5])

    heat = charts.class_retention_heatmap(tables.class_retention_by_run(latest, labels))
    assert heat.data[0].z.shape == (2, NUM_CLASSES) and heat.data[0].text[0][CLASS_NAMES.index("car")] == ""
    assert [s.fillcolor for s in heat.layout.shapes] == charts.CLASS_COLORS


def test_domain_shift_frame_and_the_accuracy_axes(frame):
    def ev(run_id, dataset, condition, miou, sha="s1"):
        return {"run_id": run_id, "variant": "x", "dataset": dataset, "condition": condition, "miou": miou,
                "pixel_accuracy": 0.5, "num_images": 2, "checkpoint_sha256": sha, "per_class_iou": {}}
    evals = [ev(2, "synthetic", "", 0.5), ev(2, "synthetic-acdc", "night", 0.1), ev(2, "synthetic-acdc", "fog", 0.2),
             ev(4, "synthetic-acdc", "fog", 0.05), ev(4, "synthetic-acdc", "fog", 0.3),  # the later one counts
             ev(4, "synthetic", "", 0.6), ev(6, "kitti", "", 0.15), ev(99, "kitti", "", 0.9)]
    shift = tables.domain_shift_frame(evals, {4: "d", 2: "b"}, "synthetic")
    assert list(shift["domain"]) == ["synthetic", "synthetic", "synthetic-acdc · fog", "synthetic-acdc · fog",
                                     "synthetic-acdc · night"]
    assert list(shift["run"])[:2] == ["d", "b"] and shift["in_distribution"].tolist() == [True, True, False, False, False]
    matrix = tables.domain_shift_matrix(shift)
    assert matrix.loc["d", "synthetic-acdc · fog"] == 0.3 and np.isnan(matrix.loc["d", "synthetic-acdc · night"])
    fig = charts.domain_shift_figure(shift)
    assert [t.name for t in fig.data] == ["synthetic (in-distribution)", "synthetic-acdc · fog", "synthetic-acdc · night"]

    done = tables.evaluated(frame)
    runs = done[done["dataset"] == "synthetic"].assign(mpc=[0.2, 0.4, 0.3, None])
    runs, axes = tables.with_accuracy_axes(runs, evals)
    assert list(axes) == ["miou", "mpc", "miou@synthetic-acdc/fog", "miou@synthetic-acdc/night"]
    assert axes["miou@synthetic-acdc/fog"] == "mIoU on synthetic-acdc · fog"
    assert runs.set_index("run_id")["miou@synthetic-acdc/fog"].to_dict() == pytest.approx(
        {1: np.nan, 2: 0.2, 3: np.nan, 4: 0.3}, nan_ok=True)
    assert list(charts.pareto_front(runs, "params_m", "mpc")["variant"]) == ["a", "b"]  # on mPC: d (no mPC) is out
    fig = charts.tradeoff_figure(runs.dropna(subset=["mpc"]), "params_m", y="mpc", y_label=axes["mpc"])
    front = [t for t in fig.data if t.name == "Pareto front"][0]
    assert list(front.y) == [0.2, 0.4] and fig.layout.yaxis.title.text == axes["mpc"]


def test_robustness_numbers_from_a_real_store(dashboard_data):
    from engine.store import Store

    with Store(dashboard_data.db) as store:
        rows, sweeps = store.leaderboard(), store.robustness()
    labels = {r["run_id"]: r["variant"] for r in rows if r["robustness_id"]}
    latest = tables.latest_sweeps(sweeps, labels, "synthetic")
    assert {w["id"] for w in latest} == {r["robustness_id"] for r in rows if r["robustness_id"]}
    summary = tables.robustness_summary(latest, labels).set_index("run_id")
    board = tables.leaderboard_frame(rows).set_index("run_id")
    assert summary["mpc"].to_dict() == pytest.approx(board.loc[summary.index, "mpc"].to_dict())  # the Leaderboard's
    assert summary["rpc"].to_dict() == pytest.approx(board.loc[summary.index, "rpc"].to_dict())
    retention = tables.group_retention(latest, labels)
    for w in latest:
        mine = retention[retention["run_id"] == w["run_id"]].set_index("group")["retention"]
        assert mine.to_dict() == pytest.approx({g: m / w["clean_miou"] for g, m in w["groups"].items()})
    bars = {t.name: list(t.y) for t in charts.mpc_figure(tables.robustness_summary(latest, labels)).data}
    assert bars["mPC"] == pytest.approx([w["mpc"] for w in latest])


def test_video_comparison_runs_both_models_on_the_transformed_frames(tmp_path):
    frames = [np.full((36, 50, 3), 40 * k, np.uint8) for k in range(3)]
    src = tmp_path / "clip.mp4"
    video.write_video(src, frames, fps=10)
    seen = []

    def predict(images):
        seen.extend(float(img.mean()) for img in images)
        return [np.zeros(img.shape[:2], np.uint8) for img in images]

    res = process_video(src, predict, predict, tmp_path / "out", max_frames=3, mode="overlay", alpha=0.0,
                        visible=[], transform=lambda frame, i: np.full_like(frame, 200 + i))
    assert seen == pytest.approx([200, 201, 202] * 2, abs=0.01)  # each frame replaced before both models see it
    assert abs(float(res.frame(2)[0].mean()) - 202) < 3          # and kept as the transformed frame


# ---------------------------------------------------------------- derived models (pruned, INT8)

def record_model(store, variant, arch, *, miou, size_mb, latency_ms, gflops=10.0, params=1_000_000, parent=None,
                 derivation=None, precision="fp32", device="Xeon", threads=2, resolution="64x32",
                 dataset="synthetic") -> int:
    """A completed, evaluated run in a real store, as training (or `engine compress`, with `parent`
    and `derivation`) and evaluation record it."""
    from engine.metrics import Metrics
    from engine.profiling import Profile

    hp = {"schedule": {"epochs": 2, "optimizer": {"name": "adam", "lr": 1e-4}}, "data": {"batch_size": 4}}
    rid = store.start_run(variant=variant, arch=arch, backbone="b", profile="quick", hyperparameters=hp,
                          dataset=dataset, data_root="/data", train_images=4, val_images=2, device="cpu",
                          code_version="test", parent_run_id=parent, derivation=derivation)
    store.record_evaluation(
        run_id=rid, variant=variant, checkpoint=f"/w/{variant}/best.pt", checkpoint_sha256="ab" * 32, dataset=dataset,
        split="val", eval_size=resolution,
        metrics=Metrics(miou=miou, pixel_accuracy=0.8, per_class_iou={n: miou for n in CLASS_NAMES}, num_images=2),
        profiles=[Profile(params=params, size_mb=size_mb, gflops=gflops, latency_ms=latency_ms, device=device,
                        threads=threads, precision=precision, resolution=resolution)])
    store.finish_run(rid, status="completed")
    return rid


@pytest.fixture
def derived_store(tmp_path):
    """A real SQLite store: DeepLabV3-R50 with its +prune0.5, +int8 and +prune0.5+int8 (made from the
    pruned one), a UNet with an +int8 whose latency was measured on another machine, and an HRNet
    with no derived model. Yields (url, {variant: run_id})."""
    from engine.store import Store

    url = f"sqlite:///{tmp_path / 'results.db'}"
    store, ids = Store(url), {}
    a = "deeplabv3_r50_adam"
    ids[a] = record_model(store, a, "deeplabv3_r50", miou=0.60, size_mb=160, latency_ms=200, gflops=140, params=40_000_000)
    ids[f"{a}+prune0.5"] = record_model(store, f"{a}+prune0.5", "deeplabv3_r50", miou=0.58, size_mb=90, latency_ms=110,
                                        gflops=70, params=22_000_000, parent=ids[a],
                                        derivation={"method": "prune", "ratio": 0.5, "importance": "l1"})
    store.update_derivation(ids[f"{a}+prune0.5"], miou_before_finetune=0.41, finetune_iters=200)
    ids[f"{a}+int8"] = record_model(store, f"{a}+int8", "deeplabv3_r50", miou=0.59, size_mb=41, latency_ms=90, gflops=140,
                                    params=40_000_000, parent=ids[a], derivation={"method": "int8", "ratio": None},
                                    precision="int8")
    ids[f"{a}+prune0.5+int8"] = record_model(store, f"{a}+prune0.5+int8", "deeplabv3_r50", miou=0.57, size_mb=23,
                                             latency_ms=60, gflops=70, params=22_000_000, parent=ids[f"{a}+prune0.5"],
                                             derivation={"method": "int8", "ratio": None}, precision="int8")
    ids["unet_ce_dice"] = record_model(store, "unet_ce_dice", "unet", miou=0.55, size_mb=120, latency_ms=150)
    ids["unet_ce_dice+int8"] = record_model(store, "unet_ce_dice+int8", "unet", miou=0.56, size_mb=31, latency_ms=40,
                                            parent=ids["unet_ce_dice"], derivation={"method": "int8"},
                                            precision="int8", device="another CPU")
    ids["hrnetv2_w48_adamw"] = record_model(store, "hrnetv2_w48_adamw", "hrnetv2_w48", miou=0.65, size_mb=260,
                                            latency_ms=300)
    store.close()
    return url, ids


def assert_tree(view: pd.DataFrame) -> None:
    """Every row whose parent is in the view comes after it, with only the parent's descendants between them."""
    order = list(view["run_id"])
    parent = {int(r): (int(p) if pd.notna(p) else None) for r, p in zip(view["run_id"], view["parent_run_id"])}

    def descends(rid, ancestor) -> bool:
        while parent.get(rid) is not None:
            rid = parent[rid]
            if rid == ancestor:
                return True
        return False

    for i, rid in enumerate(order):
        p = parent[rid]
        if p in order:
            j = order.index(p)
            assert j < i and all(descends(between, p) for between in order[j + 1:i]), (view["variant"].tolist(), rid)


def test_leaderboard_lists_derived_models_under_their_parent_with_their_change(derived_store):
    from engine.store import Store

    url, ids = derived_store
    with Store(url) as store:
        frame = tables.leaderboard_frame(store.leaderboard())
    view = tables.lineage_view(frame)  # mIoU, highest first
    a = "deeplabv3_r50_adam"
    assert list(view["variant"]) == ["hrnetv2_w48_adamw", a, f"{a}+int8", f"{a}+prune0.5", f"{a}+prune0.5+int8",
                                     "unet_ce_dice", "unet_ce_dice+int8"]
    assert list(view["model"]) == ["hrnetv2_w48_adamw", a, "↳ +int8", "↳ +prune0.5", "\u2003↳ +int8", "unet_ce_dice",
                                   "↳ +int8"]
    assert list(view["method"]) == ["trained", "trained", "int8", "prune", "prune+int8", "trained", "int8"]
    row = view.set_index("variant")
    assert row.loc[f"{a}+prune0.5", "ratio"] == 0.5 and row.loc[f"{a}+prune0.5+int8", "ratio"] == 0.5  # the chain's
    assert np.isnan(row.loc[f"{a}+int8", "ratio"]) and np.isnan(row.loc[a, "ratio"])
    assert row.loc[f"{a}+prune0.5+int8", "parent_variant"] == f"{a}+prune0.5"
    # the change against the parent: mIoU difference, size and latency ratios
    assert row.loc[f"{a}+prune0.5", ["delta_miou", "size_ratio", "latency_ratio"]].tolist() == pytest.approx(
        [-0.02, 90 / 160, 110 / 200])
    assert row.loc[f"{a}+int8", ["delta_miou", "size_ratio", "latency_ratio"]].tolist() == pytest.approx(
        [-0.01, 41 / 160, 90 / 200])
    assert row.loc[f"{a}+prune0.5+int8", ["delta_miou", "size_ratio", "latency_ratio"]].tolist() == pytest.approx(
        [-0.01, 23 / 90, 60 / 110])  # against the pruned model it was made from
    unet8 = row.loc["unet_ce_dice+int8"]
    assert unet8["delta_miou"] == pytest.approx(0.01) and unet8["size_ratio"] == pytest.approx(31 / 120)
    assert np.isnan(unet8["latency_ratio"])  # measured on another CPU: no ratio
    assert row[row["method"] == "trained"][["delta_miou", "size_ratio", "latency_ratio"]].isna().all().all()

    # whatever the sort, each derived model stays under its parent
    for column in tables.LEADERBOARD_COLUMNS:
        for ascending in (True, False, None):
            sorted_view = tables.lineage_view(frame, column, ascending)
            assert sorted(sorted_view["run_id"]) == sorted(frame["run_id"])
            assert_tree(sorted_view)
    fastest = tables.lineage_view(frame, "latency_ms")
    assert list(fastest["variant"]) == ["unet_ce_dice", "unet_ce_dice+int8", a, f"{a}+int8", f"{a}+prune0.5",
                                        f"{a}+prune0.5+int8", "hrnetv2_w48_adamw"]
    assert tables.sort_label("latency_ms") == "Latency (ms) (lowest first)"
    assert tables.sort_label("miou") == "mIoU (highest first)"
    # a derived model whose parent is filtered out stands at the top, under its full name
    orphan = tables.lineage_view(frame[frame["variant"] != f"{a}+prune0.5"])
    assert orphan.set_index("variant").loc[f"{a}+prune0.5+int8", "model"] == f"{a}+prune0.5+int8"
    assert_tree(orphan)


def test_tradeoff_figure_joins_each_parent_to_its_derived_models(derived_store):
    from engine.store import Store

    url, ids = derived_store
    with Store(url) as store:
        runs = tables.evaluated(tables.leaderboard_frame(store.leaderboard()))
    fig = charts.tradeoff_figure(runs, "latency_ms", log_x=True)
    a = "deeplabv3_r50_adam"
    edges = {(int(t.customdata[0][0]), int(t.customdata[1][0])): t for t in fig.data if t.mode == "lines"}
    assert set(edges) == {(ids[a], ids[f"{a}+prune0.5"]), (ids[a], ids[f"{a}+int8"]),
                          (ids[f"{a}+prune0.5"], ids[f"{a}+prune0.5+int8"]), (ids["unet_ce_dice"], ids["unet_ce_dice+int8"])}
    line = edges[(ids[f"{a}+prune0.5"], ids[f"{a}+prune0.5+int8"])]
    assert list(line.x) == [110, 60] and list(line.y) == pytest.approx([0.58, 0.57])  # from the parent to the derived
    assert line.line.color == charts.ARCH_COLORS["deeplabv3_r50"] and line.hoverinfo == "skip"
    # one marker symbol per method, every point still carrying its run id
    symbol = {int(c[0]): t.marker.symbol for t in fig.data if t.mode == "markers" and t.customdata is not None
              for c in t.customdata}
    assert sorted(symbol) == sorted(ids.values())
    assert {symbol[ids[a]], symbol[ids[f"{a}+prune0.5"]], symbol[ids[f"{a}+int8"]], symbol[ids[f"{a}+prune0.5+int8"]]} \
        == {"circle", "diamond", "square", "star"}
    assert symbol[ids[f"{a}+prune0.5+int8"]] == charts.METHOD_SYMBOLS["prune+int8"] == "star"
    assert symbol[ids["unet_ce_dice+int8"]] == symbol[ids[f"{a}+int8"]] == "square"
    key = [t for t in fig.data if t.legend == "legend2"]
    assert [(t.name, t.marker.symbol) for t in key] == [("trained", "circle"), ("pruned", "diamond"), ("INT8", "square"),
                                                        ("pruned + INT8", "star")]
    assert fig.layout.legend2.title.text == "Method" and fig.layout.xaxis.type == "log"
    hover = [h for t in fig.data if t.hovertext is not None for h in t.hovertext if f"<b>{a}+prune0.5+int8</b>" in h]
    assert "made by: pruned 50% + INT8" in hover[0] and f"from {a}+prune0.5: mIoU -0.010, size x0.26" in hover[0]
    front = [t for t in fig.data if t.name == "Pareto front"][0]
    # unet_ce_dice+int8 was timed on another CPU: no latency on this setup, so never on its front
    assert pd.isna(runs.set_index("variant").loc["unet_ce_dice+int8", "latency_ms"])
    assert [int(c[0]) for c in front.customdata] == [ids[v] for v in (f"{a}+prune0.5+int8", f"{a}+int8", a,
                                                                      "hrnetv2_w48_adamw")]
    with Store(url) as store:  # on that CPU's setup, it is the only one measured: the front is itself
        other = next(x["setup"] for x in store.cost_setups() if "another CPU" in x["setup"])
        elsewhere = tables.evaluated(tables.leaderboard_frame(store.leaderboard(setup=other)))
    alone = [t for t in charts.tradeoff_figure(elsewhere, "latency_ms").data if t.name == "Pareto front"][0]
    assert [int(c[0]) for c in alone.customdata] == [ids["unet_ce_dice+int8"]]
    # a line only where both ends are plotted
    fewer = charts.tradeoff_figure(runs[runs["variant"] != f"{a}+prune0.5"], "size_mb")
    assert len([t for t in fewer.data if t.mode == "lines"]) == 2


def test_compare_and_coverage_offer_derived_checkpoints_and_their_parent(derived_store, tmp_path):
    from dashboard import loaders

    url, ids = derived_store
    a = "deeplabv3_r50_adam"
    weights = tmp_path / "weights"
    for variant in (a, f"{a}+int8", f"{a}+prune0.5+int8", "unet_ce_dice+int8"):  # unet's own checkpoint is gone
        (weights / variant).mkdir(parents=True)
        (weights / variant / "best.pt").write_bytes(b"not loaded here")
    models = {m.variant: m for m in loaders.available_models(url, weights)}
    assert list(models) == [a, f"{a}+int8", f"{a}+prune0.5+int8", "unet_ce_dice+int8"]  # best mIoU first
    int8 = models[f"{a}+int8"]
    assert (int8.run_id, int8.parent_run_id, int8.method) == (ids[f"{a}+int8"], ids[a], "int8")
    assert loaders.parent_of(int8, list(models.values())) == models[a]
    assert loaders.parent_of(models[a], list(models.values())) is None
    assert loaders.parent_of(models[f"{a}+prune0.5+int8"], list(models.values())) is None  # +prune0.5 has no checkpoint
    assert loaders.parent_of(models["unet_ce_dice+int8"], list(models.values())) is None
    assert models[f"{a}+prune0.5+int8"].method == "prune+int8" and models[f"{a}+prune0.5+int8"].ratio == 0.5
    assert tables.method_text("prune+int8", 0.5) == "pruned 50% + INT8"


def test_lineage_of_a_derived_run_whose_parent_the_store_never_saw():
    rows = [{"run_id": 1, "parent_run_id": None, "method": "int8", "ratio": None},   # compressed from a lone file
            {"run_id": 2, "parent_run_id": 1, "method": "prune", "ratio": 0.5},
            {"run_id": 3, "parent_run_id": 2, "method": "prune", "ratio": 0.5},
            {"run_id": 4, "parent_run_id": 99, "method": None, "ratio": None}]    # its parent since deleted
    made = tables.lineage(rows)
    assert [made[r]["method"] for r in (1, 2, 3, 4)] == ["int8", "int8+prune", "int8+prune+prune", "derived"]
    assert made[3]["ratio"] == pytest.approx(0.75) and made[1]["ratio"] is None and made[4]["parent"] is None
    assert made[2]["parent"]["run_id"] == 1 and [made[r]["depth"] for r in (1, 2, 3, 4)] == [1, 2, 3, 1]
