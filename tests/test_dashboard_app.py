"""Every dashboard page run by Streamlit's AppTest against a real SQLite store and real tiny
checkpoints trained by the engine (fixture `dashboard_data`)."""
from __future__ import annotations

import base64
import csv
import io
import json
import os
import sqlite3
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from dashboard import media, tables
from engine import video
from engine.classes import NUM_CLASSES
from engine.coverage import CSV_COLUMNS
from engine.data.synthetic import render_scene

APP = str(Path(__file__).resolve().parent.parent / "dashboard" / "app.py")


@pytest.fixture
def app(dashboard_data, monkeypatch):
    """A fresh app session on `page` with the store and weights of `dashboard_data`."""
    for k, v in dashboard_data.env.items():
        monkeypatch.setenv(k, v)

    def open_page(page: str, env: dict | None = None) -> AppTest:
        for k, v in (env or {}).items():
            monkeypatch.setenv(k, v)
        at = AppTest.from_file(APP, default_timeout=180)
        at.run()
        at.switch_page(f"views/{page}.py").run()
        assert not at.exception, [e.value for e in at.exception]
        return at
    return open_page


def _png(w=160, h=96, seed=0) -> bytes:
    return media.encode_png(render_scene(np.random.default_rng(seed), w, h)[0])


def _texts(at, kind) -> str:
    return "\n".join(str(e.value) for e in getattr(at, kind))


def test_leaderboard_lists_every_run_with_failed_runs_marked(app, dashboard_data):
    at = app("leaderboard")
    assert at.title[0].value == "Leaderboard"
    df = at.dataframe[0].value
    assert set(dashboard_data.variants) | {"hrnetv2_w48_sgd"} == set(df["variant"])
    failed = df[df["status"] == "failed"].iloc[0]
    assert "TrainingDiverged" in failed["error"] and np.isnan(failed["miou"])
    done = df[df["status"] == "completed"]
    assert done["miou"].between(0, 1).all() and (done["params_m"] > 0).all() and done["latency_ms"].notna().all()
    assert "TrainingDiverged" in _texts(at, "error")
    # the latency is named with the resolution it holds for (the tests profile at 64x32: conftest)
    assert {m.label for m in at.metric} >= {"Runs", "Best mIoU", "Fastest at 64x32", "Smallest"}
    smallest = next(m for m in at.metric if m.label == "Smallest")  # on disk: what a device must hold
    assert smallest.value == f"{done['size_mb'].min():.1f} MB"
    at.multiselect[2].set_value(["failed"]).run()  # status filter
    assert list(at.dataframe[0].value["variant"]) == ["hrnetv2_w48_sgd"]
    at.multiselect[2].set_value(["completed"]).run()
    assert set(at.dataframe[0].value["variant"]) == set(dashboard_data.variants)


def test_empty_and_unreadable_stores_get_a_clear_message(app, tmp_path):
    at = app("leaderboard", {"RESULTS_DB": f"sqlite:///{tmp_path / 'empty.db'}"})
    assert "has no runs yet" in _texts(at, "info") and "python -m engine demo" in _texts(at, "info")
    bad = tmp_path / "notadb.db"
    bad.write_bytes(b"this is not a database" * 100)
    for page in ("leaderboard", "tradeoffs", "per_class"):
        at = app(page, {"RESULTS_DB": f"sqlite:///{bad}"})
        assert "Cannot read the results store" in _texts(at, "error")
    old = tmp_path / "old.db"
    with sqlite3.connect(old) as c:
        c.execute("CREATE TABLE meta (key VARCHAR(64) PRIMARY KEY, value VARCHAR(255))")
        c.execute("INSERT INTO meta VALUES ('schema_version', '0')")
    at = app("tradeoffs", {"RESULTS_DB": f"sqlite:///{old}"})
    assert "schema version 0" in _texts(at, "error")


def test_tradeoffs_plots_every_axis_with_the_pareto_front(app, dashboard_data):
    at = app("tradeoffs")
    assert at.title[0].value == "Trade-offs"
    axis = at.selectbox(key="tradeoff_axis")
    assert axis.options == list(tables.EFFICIENCY_AXES.values())
    for x in tables.EFFICIENCY_AXES:
        axis.set_value(x).run()
        assert not at.exception
        assert "Pareto front" in _texts(at, "markdown")
    at.toggle(key="tradeoff_log").set_value(True).run()
    charts = at.get("plotly_chart")
    assert len(charts) == 3  # the scatter, the training curves and the inference benchmarks
    bench = next(d.value for d in at.dataframe if "fast_fps" in d.value.columns)
    assert set(bench["variant"]) == set(dashboard_data.variants) and (bench["size"] == "64x32").all()
    assert (bench["fast_fps"] > 0).all() and (bench["agreement"] > 0.99).all()
    assert all(v in charts[0].proto.spec for v in dashboard_data.variants)
    assert '"type":"log"' in charts[0].proto.spec.replace(" ", "")
    at.multiselect(key="curve_runs").set_value([]).run()
    assert len(at.get("plotly_chart")) == 2


def test_per_class_heatmap_and_difference(app, dashboard_data):
    at = app("per_class")
    assert at.title[0].value == "Per-class IoU"
    charts = at.get("plotly_chart")
    assert len(charts) == 2 and '"type":"heatmap"' in charts[0].proto.spec.replace(" ", "")
    a, b = at.selectbox(key="perclass_a"), at.selectbox(key="perclass_b")
    assert a.value != b.value
    won = {m.label: m.value for m in at.metric}
    assert int(won["Classes where A is better"]) + int(won["Classes where B is better"]) <= NUM_CLASSES
    b.set_value(a.value).run()
    assert "Pick two different runs" in _texts(at, "info") and len(at.get("plotly_chart")) == 1


def test_compare_an_image_then_change_the_view_without_rerunning_models(app, dashboard_data):
    at = app("compare")
    assert at.title[0].value == "Compare two models"
    assert {at.selectbox(key="pick_compare_a").value, at.selectbox(key="pick_compare_b").value} == set(
        dashboard_data.variants)
    at.file_uploader(key="compare_upload").set_value(("street.jpg", _jpeg(203, 117), "image/jpeg")).run()
    assert not at.exception and not at.error
    images = at.get("image")
    assert len(images) == 2 and all("203x117 · inference" in e.captions[0] for e in images)
    assert at.session_state["inference_calls"] == 2
    shown = [e.value for e in images]
    at.slider(key="alpha").set_value(0.9).run()
    at.radio(key="view_mode").set_value("mask").run()
    at.button(key="visible_classes_none").click().run()
    assert at.multiselect(key="visible_classes").value == []
    at.button(key="visible_classes_vehicle").click().run()
    assert at.multiselect(key="visible_classes").value == [13, 14, 15, 16, 17, 18]
    at.radio(key="view_mode").set_value("disagreement").run()
    assert at.session_state["inference_calls"] == 2  # views re-drawn from the kept predictions
    assert [e.value for e in at.get("image")] != shown
    assert {m.label for m in at.metric} >= {"Inference A", "Inference B", "Pixels where A and B agree"}
    labels = [b.proto.label for b in at.get("download_button")]
    assert labels == ["A as PNG", "B as PNG", "Side by side", "A label map", "B label map"]
    # the same model on both sides: one more model run at most, and 100 % agreement
    at.selectbox(key="pick_compare_b").set_value(at.selectbox(key="pick_compare_a").value).run()
    assert at.session_state["inference_calls"] == 2
    assert {m.label: m.value for m in at.metric}["Pixels where A and B agree"] == "100.0%"


def test_compare_on_the_onnx_runtime_backend_chosen_in_the_sidebar(app, dashboard_data):
    at = app("compare")
    assert at.selectbox(key="backend").value == "torch"
    at.file_uploader(key="compare_upload").set_value(("street.png", _png(128, 64), "image/png")).run()
    torch_labels = [p.labels for p in at.session_state["_predictions"].values()]
    assert all("on cpu, torch" in e.captions[0] for e in at.get("image"))
    at.selectbox(key="backend").set_value("onnx").run()
    assert not at.exception and not at.error
    assert all("on cpu, onnxruntime-cpu fp32" in e.captions[0] for e in at.get("image"))
    assert at.session_state["inference_calls"] == 4   # both models again, on the other backend
    onnx_labels = [p.labels for k, p in at.session_state["_predictions"].items() if k[2] == "onnx"]
    assert len(onnx_labels) == 2
    for a in onnx_labels:   # the same model (exactness of the export itself: test_onnx_backend)
        assert a.shape == (64, 128) and max(np.mean(a == b) for b in torch_labels) >= 0.95
    assert all((Path(dashboard_data.weights) / v / "best.onnx").is_file() for v in dashboard_data.variants)


def _jpeg(w, h) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(render_scene(np.random.default_rng(1), w, h)[0]).save(buf, format="JPEG")
    return buf.getvalue()


def test_compare_bad_uploads_get_a_message_and_the_page_keeps_working(app):
    at = app("compare")
    def upload(name, data, mime):
        at.file_uploader(key="compare_upload").set_value((name, data, mime)).run()

    upload("broken.png", b"\x89PNG\r\n\x1a\n" + bytes(200), "image/png")
    assert "broken.png: unreadable or corrupt image" in _texts(at, "error") and not at.exception
    upload("clip.mp4", b"\x00\x00\x00\x18ftypmp42" + bytes(100), "video/mp4")
    assert "clip.mp4: not a readable video" in _texts(at, "error") and not at.exception
    upload("street.png", _png(), "image/png")
    assert not at.error and len(at.get("image")) == 2


def test_compare_without_trained_models_says_how_to_train(app, tmp_path):
    at = app("compare", {"WEIGHTS_DIR": str(tmp_path / "no-weights")})
    assert "No trained models" in _texts(at, "info") and "python -m engine train" in _texts(at, "info")
    at = app("coverage", {"WEIGHTS_DIR": str(tmp_path / "no-weights")})
    assert "No trained models" in _texts(at, "info")


def test_compare_a_video_frame_by_frame(app, tmp_path):
    frames = [render_scene(np.random.default_rng(k), 96, 48)[0] for k in range(5)]
    clip = tmp_path / "drive.mp4"
    video.write_video(clip, frames, fps=5)
    at = app("compare")
    at.file_uploader(key="compare_upload").set_value(("drive.mp4", clip.read_bytes(), "video/mp4")).run()
    assert "96x48" in _texts(at, "caption") and "Process video" in [b.label for b in at.button]
    at.number_input(key="video_frames").set_value(4).run()
    at.button(key="process_video").click().run()
    assert not at.exception and not at.error
    assert {m.label: m.value for m in at.metric}["Frames processed"] == "4"
    assert len(at.get("video")) == 1 and len(at.get("image")) == 2
    first = [e.value for e in at.get("image")]
    at.slider(key="video_frame").set_value(3).run()
    assert [e.value for e in at.get("image")] != first
    at.slider(key="alpha").set_value(0.2).run()
    assert "drawn with other view settings" in _texts(at, "caption")
    at.button(key="reencode").click().run()
    assert "drawn with other view settings" not in _texts(at, "caption")
    assert [b.proto.label for b in at.get("download_button")] == [
        f"A: {at.selectbox(key='pick_compare_a').value} (MP4)", f"B: {at.selectbox(key='pick_compare_b').value} (MP4)",
        "Side by side (MP4)"]


def test_coverage_of_images_and_a_zip_exports_the_tidy_csv(app, dashboard_data):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("more/c.png", _png(seed=3))
        z.writestr("more/readme.txt", "not an image")
    at = app("coverage")
    assert at.title[0].value == "Class coverage"
    model = at.selectbox(key="pick_coverage_model").value
    at.file_uploader(key="coverage_upload").set_value([
        ("a.png", _png(seed=1), "image/png"), ("b.webp", _webp(), "image/webp"),
        ("scenes.zip", buf.getvalue(), "application/zip"), ("bad.bmp", b"BM" + bytes(40), "image/bmp")]).run()
    assert not at.exception
    warnings = _texts(at, "warning")
    assert "readme.txt" in warnings and "bad.bmp: unreadable or corrupt" in warnings
    summary = _frame(at, "top_class")
    assert list(summary["source"]) == ["a.png", "b.webp", "scenes.zip/more/c.png"]
    assert (summary["model"] == model).all()
    share_cols = [c for c in summary.columns if c.startswith("share_")]
    assert np.allclose(summary[share_cols].sum(axis=1), 1.0)
    tidy = _frame(at, "class_iou")
    assert tuple(tidy.columns) == CSV_COLUMNS and len(tidy) == 3 * NUM_CLASSES
    labels = [m.label for m in at.metric]
    assert labels[:2] == ["Green View Index", "Sky view"] and labels[7:9] == ["Flat", "Construction"]
    assert [b.proto.label for b in at.get("download_button")] == [
        "GeoJSON (map layers)", "Coverage CSV (tidy)", "Indicators CSV", "Per-image summary CSV",
        "All images together CSV"]
    rows = list(csv.DictReader(io.StringIO(tidy.to_csv(index=False))))
    assert sum(float(r["share"]) for r in rows if r["source"] == "a.png") == pytest.approx(1.0)
    places = _frame(at, "located")
    assert not places["located"].any()  # PNGs without a place: kept, marked, off the map
    assert "3 of 3 images have no place" in _texts(at, "caption")


def _frame(at, column: str):
    """The page's one dataframe with this column."""
    frames = [d.value for d in at.dataframe if column in d.value.columns]
    assert len(frames) == 1, [list(d.value.columns)[:4] for d in at.dataframe]
    return frames[0]


def test_coverage_of_sample_photos_places_them_and_says_what_stands_behind_the_numbers(app, dashboard_data):
    at = app("coverage")
    at.selectbox(key="pick_coverage_model").set_value(dashboard_data.variants[0]).run()
    at.toggle(key="coverage_sample").set_value(True).run()
    assert not at.exception and not at.error
    assert "evaluated only on the synthetic street scenes" in _texts(at, "warning")
    behind = _frame(at, "IoU")
    assert set(behind["class"]) >= {"vegetation", "sky", "car", "person"} and behind["IoU"].notna().all()
    places = _frame(at, "located")
    assert places["located"].all() and len(places) == 8 and places["lat"].between(48.77, 48.78).all()
    assert (places["validated"] == False).all()  # noqa: E712 (a column of booleans)
    gvi = {m.label: m.value for m in at.metric}["Green View Index"]
    assert gvi == f"{places['green_view_index'].mean():.1%}"
    at.segmented_control(key="coverage_aggregate").set_value("Grid").run()
    at.number_input(key="coverage_grid_m").set_value(100.0).run()
    areas = _frame(at, "images")
    assert areas["images"].sum() == 8 and len(areas) >= 2  # two streets ~60 m apart, photos ~80 m apart
    cell, places = areas.iloc[0], _frame(at, "located")
    mine = places[places["area"] == cell["area"]]
    assert cell["green_view_index"] == pytest.approx(mine["green_view_index"].mean())
    # districts: the northern street's four photos in one polygon, the southern street's in another
    north, south = (media.SAMPLE_ORIGIN[0] - 0.0002, media.SAMPLE_ORIGIN[0] + 0.0002), (48.7775, 48.7782)
    west, east = 9.179, 9.185
    districts = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"name": name}, "geometry": {"type": "Polygon", "coordinates": [[
            [west, lo], [east, lo], [east, hi], [west, hi], [west, lo]]]}}
        for name, (lo, hi) in (("Nord", north), ("Süd", south))]}
    at.segmented_control(key="coverage_aggregate").set_value("Districts").run()
    at.file_uploader(key="coverage_districts").set_value(
        ("districts.geojson", json.dumps(districts).encode(), "application/geo+json")).run()
    assert not at.exception and not at.error
    areas = _frame(at, "images").set_index("area")
    places = _frame(at, "located")
    assert dict(areas["images"]) == {"Nord": 4, "Süd": 4}
    assert areas.loc["Süd", "green_view_index"] == pytest.approx(places["green_view_index"].iloc[4:].mean())
    at.toggle(key="coverage_terrain").set_value(True).run()
    assert "terrain" in set(_frame(at, "IoU")["class"])


def test_coverage_of_a_dashcam_drive_places_frames_along_its_gpx_track(app):
    at = app("coverage")
    at.segmented_control(key="coverage_source").set_value("Dashcam video").run()
    assert "Upload a dashcam video" in _texts(at, "info")
    at.toggle(key="coverage_sample_drive").set_value(True).run()
    assert not at.exception and not at.error
    frames = _frame(at, "located")
    # the sample drive: 6 s at 10 m/s, a frame every 10 m: t = 0 ... 5 s (the clip's last frame is at 5.8 s)
    assert list(frames["time_s"]) == pytest.approx([0, 1, 2, 3, 4, 5]) and frames["located"].all()
    assert frames["source"].iloc[1] == "sample_drive.mp4#t=1.00"
    east = np.diff(frames["lon"].to_numpy())
    assert (east > 0).all() and np.allclose(east, east[0]) and np.allclose(frames["lat"], media.SAMPLE_ORIGIN[0])
    assert "Indicators: mean of 6 frames" in [h.value for h in at.subheader]
    at.number_input(key="coverage_every_m").set_value(20.0).run()
    assert list(_frame(at, "located")["time_s"]) == pytest.approx([0, 2, 4])


def _webp() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(render_scene(np.random.default_rng(2), 128, 64)[0]).save(buf, format="WEBP")
    return buf.getvalue()


def test_coverage_of_the_bad_input_corpus_keeps_the_good_images_and_names_the_bad(app):
    from tests.test_bad_input import corpus

    files = corpus()
    at = app("coverage")
    at.file_uploader(key="coverage_upload").set_value(
        [(name, data, "application/octet-stream") for name, (data, _) in files.items()]
        + [("../../escape.png", _png(seed=4), "image/png")]).run()
    assert not at.exception
    warnings = _texts(at, "warning")
    for name, (_, expected) in files.items():
        if isinstance(expected, str):
            assert f"{name}: {expected}" in warnings or (name in warnings and expected in warnings), name
    good = [n for n, (_, e) in files.items() if not isinstance(e, str)] + ["../../escape.png"]
    assert list(_frame(at, "top_class")["source"]) == good


def test_compare_shows_a_phone_photo_upright_and_refuses_a_bomb(app, tmp_path):
    from tests.test_bad_input import _bomb_png, _phone_jpeg

    at = app("compare")
    at.file_uploader(key="compare_upload").set_value(("bomb.png", _bomb_png(), "image/png")).run()
    assert "bomb.png: 100000x100000 is 10000.0 million pixels, over the limit" in _texts(at, "error")
    at.file_uploader(key="compare_upload").set_value(
        ("phone.jpg", _phone_jpeg(render_scene(np.random.default_rng(1), 96, 48)[0]), "image/jpeg")).run()
    assert not at.exception and not at.error
    assert all(e.captions[0].startswith("48x96 · ") for e in at.get("image"))  # shown 48 wide, 96 tall


def test_a_video_upload_named_to_climb_out_stays_in_the_session_folder(app, tmp_path):
    clip = tmp_path / "drive.mp4"
    video.write_video(clip, [render_scene(np.random.default_rng(k), 96, 48)[0] for k in range(2)], fps=5)
    at = app("compare")
    at.file_uploader(key="compare_upload").set_value(("../../climb.mp4", clip.read_bytes(), "video/mp4")).run()
    assert not at.exception and not at.error
    workdir = Path(at.session_state["_compare_dir"])
    inside = list(workdir.rglob("climb.mp4"))
    assert len(inside) == 1 and not (workdir.parent / "climb.mp4").exists() and not (workdir / "climb.mp4").exists()


# ---------------------------------------------------------------- robustness

def _spec(chart) -> dict:
    return json.loads(chart.proto.spec)


def _values(v) -> list:
    """A plotly JSON array: a list, or a typed array ({dtype, bdata}, base64)."""
    if isinstance(v, dict) and "bdata" in v:
        return np.frombuffer(base64.b64decode(v["bdata"]), dtype=v["dtype"]).tolist()
    return list(v)


def _sweeps(dashboard_data) -> dict[str, dict]:
    from engine.store import Store

    with Store(dashboard_data.db) as store:
        return {w["variant"]: w for w in store.robustness(latest=True)}


def test_robustness_page_draws_the_sweeps_and_the_domain_shift_from_the_store(app, dashboard_data):
    from tests.conftest import SHIFTS, SWEPT

    sweeps = _sweeps(dashboard_data)
    assert {v: w["id"] for v, w in sweeps.items()} == dashboard_data.sweeps
    at = app("robustness")
    assert at.title[0].value == "Robustness" and not at.error and not at.warning
    assert set(at.multiselect(key="robustness_runs").value) == {w["run_id"] for w in sweeps.values()}
    mpc, severity, groups, classes, domains = (_spec(c) for c in at.get("plotly_chart"))
    # mPC and rPC bars: the store's numbers, run for run
    bars = {d["name"]: dict(zip(d["x"], _values(d["y"]))) for d in mpc["data"]}
    for v, w in sweeps.items():
        assert bars["mPC"][v] == pytest.approx(w["mpc"]) and bars["rPC"][v] == pytest.approx(w["rpc"])
        assert bars["clean mIoU"][v] == pytest.approx(w["clean_miou"])
    # one panel per corruption, one line per run, severity 0 = the clean mIoU
    assert [a["text"] for a in severity["layout"]["annotations"]] == ["gaussian_noise (noise)", "fog (weather)"]
    assert len(severity["data"]) == len(SWEPT) * len(sweeps)
    for line in severity["data"]:
        w = sweeps[line["name"]]
        assert _values(line["x"]) == [0, 1, 3] and _values(line["y"])[0] == pytest.approx(w["clean_miou"])
    # retention per group: the group's mean / clean
    for bar in groups["data"]:
        w = sweeps[bar["name"]]
        assert list(bar["x"]) == ["noise", "weather"]
        assert _values(bar["y"]) == pytest.approx([w["groups"][g] / w["clean_miou"] for g in bar["x"]])
    assert classes["data"][0]["type"] == "heatmap" and list(classes["data"][0]["y"]) == list(sweeps)
    at.radio(key="robustness_class_rows").set_value("groups").run()
    assert list(_spec(at.get("plotly_chart")[3])["data"][0]["y"]) == ["noise", "weather"]
    # other datasets and conditions: the training dataset first, each run's own rows
    assert [d["name"] for d in domains["data"]] == ["synthetic (in-distribution)"] + [
        f"synthetic-acdc · {c}" for c in SHIFTS]
    for d in domains["data"][1:]:
        condition = d["name"].split(" · ")[1]
        assert _values(d["y"]) == pytest.approx([dashboard_data.shifts[(v, condition)] for v in d["x"]])
    captions = _texts(at, "caption")
    assert "imagecorruptions-imaug" in captions and "severities 1, 3" in captions
    assert "python -m engine robustness" in captions and "on 1 val image of synthetic" in captions


def test_robustness_page_without_sweeps_names_the_commands_that_fill_it(app, dashboard_data, tmp_path):
    db = tmp_path / "no_sweeps.db"
    with sqlite3.connect(dashboard_data.db.removeprefix("sqlite:///")) as src, sqlite3.connect(db) as dst:
        src.backup(dst)
    with sqlite3.connect(db) as c:
        c.execute("DELETE FROM corruption_results")
        c.execute("DELETE FROM robustness_sweeps")
        c.execute("DELETE FROM class_ious WHERE evaluation_id IN (SELECT id FROM evaluations WHERE condition != '')")
        c.execute("DELETE FROM evaluations WHERE condition != ''")
    at = app("robustness", {"RESULTS_DB": f"sqlite:///{db}"})
    info = _texts(at, "info")
    assert "No corruption sweep of these runs yet" in info and "python -m engine robustness --variant" in info
    assert "python -m engine evaluate --variant" in info and "--dataset acdc" in info
    assert not at.get("plotly_chart") and not at.error
    at = app("tradeoffs", {"RESULTS_DB": f"sqlite:///{db}"})
    at.selectbox(key="tradeoff_y").set_value("mpc").run()
    assert "python -m engine robustness" in _texts(at, "warning") and not at.exception


def test_tradeoffs_accuracy_axis_mpc_or_another_dataset(app, dashboard_data):
    from dashboard import charts

    sweeps = _sweeps(dashboard_data)
    variant_of = {w["run_id"]: v for v, w in sweeps.items()}
    at = app("tradeoffs")
    y = at.selectbox(key="tradeoff_y")
    assert y.value == "miou" and y.options[:2] == list(tables.ACCURACY_AXES.values())
    assert {"mIoU on synthetic-acdc · fog", "mIoU on synthetic-acdc · night"} <= set(y.options)

    def points() -> dict[int, float]:
        scatter = _spec(at.get("plotly_chart")[0])
        return {d["customdata"][0][0]: _values(d["y"])[0] for d in scatter["data"] if d["name"] != "Pareto front"}

    y.set_value("mpc").run()
    assert points() == pytest.approx({w["run_id"]: w["mpc"] for w in sweeps.values()})
    scatter = _spec(at.get("plotly_chart")[0])
    assert scatter["layout"]["yaxis"]["title"]["text"] == tables.ACCURACY_AXES["mpc"]
    front = [d for d in scatter["data"] if d["name"] == "Pareto front"][0]
    expected = charts.pareto_front(tables.leaderboard_frame(_leaderboard(dashboard_data)), "params_m", "mpc")
    assert _values(front["y"]) == pytest.approx(list(expected["mpc"]))  # the front on mPC, not on mIoU
    assert "Pareto front** (Parameters (M), mPC" in _texts(at, "markdown")
    y.set_value("miou@synthetic-acdc/fog").run()
    assert points() == pytest.approx({rid: dashboard_data.shifts[(v, "fog")] for rid, v in variant_of.items()})
    assert len(at.get("plotly_chart")) == 3 and not at.exception


def _leaderboard(dashboard_data) -> list[dict]:
    from engine.store import Store

    with Store(dashboard_data.db) as store:
        return [r for r in store.leaderboard() if r["status"] == "completed"]


def test_compare_with_a_corruption_runs_the_models_once_per_corruption(app, dashboard_data):
    from engine.robustness import corrupt, seed_for

    at = app("compare")
    at.file_uploader(key="compare_upload").set_value(("street.png", _png(160, 96), "image/png")).run()
    assert at.session_state["inference_calls"] == 2 and len(at.get("image")) == 2
    at.toggle(key="compare_corrupt").set_value(True).run()
    assert not at.exception and not at.error
    assert at.selectbox(key="compare_corruption").value == "gaussian_noise" and at.slider(key="compare_severity").value == 3
    assert at.session_state["inference_calls"] == 4  # switched on: both models once on the corrupted image
    at.selectbox(key="compare_corruption").set_value("fog").run()
    at.slider(key="compare_severity").set_value(5).run()
    assert at.session_state["inference_calls"] == 8  # and once more for each change of corruption or severity
    images = at.get("image")
    assert len(images) == 4 and "fog, severity 5: what both models see" in images[1].captions[0]
    (_, name, severity), digest, corrupted, _ = at.session_state["_compare_corrupted"]
    clean = media.decode_image("street.png", _png(160, 96))
    assert (name, severity) == ("fog", 5)
    assert np.array_equal(corrupted, corrupt(clean, "fog", 5, seed_for("street", "fog", 5)))
    assert {k[-1] for k in at.session_state["_predictions"]} == {digest}  # predictions of the corrupted image
    at.slider(key="alpha").set_value(0.8).run()
    at.radio(key="view_mode").set_value("disagreement").run()
    assert at.session_state["inference_calls"] == 8  # the view re-draws from the kept predictions
    at.file_uploader(key="compare_upload").set_value(("tiny.png", media.encode_png(np.full((24, 40, 3), 128, np.uint8)), "image/png")).run()
    assert "tiny.png: corruptions need images of at least 32x32 pixels, got 40x24" in _texts(at, "error")
    assert not at.exception


def test_compare_a_video_with_a_corruption_on_every_frame(app, tmp_path):
    from engine.robustness import corrupt, seed_for

    clip = tmp_path / "drive.mp4"
    video.write_video(clip, [render_scene(np.random.default_rng(k), 96, 48)[0] for k in range(2)], fps=5)
    at = app("compare")
    at.file_uploader(key="compare_upload").set_value(("drive.mp4", clip.read_bytes(), "video/mp4")).run()
    at.toggle(key="compare_corrupt").set_value(True).run()
    at.selectbox(key="compare_corruption").set_value("fog").run()
    assert "Each frame gets fog at severity 3" in _texts(at, "caption")
    at.button(key="process_video").click().run()
    assert not at.exception and not at.error
    result = at.session_state["_video_result"]
    for i, frame in enumerate(video.read_frames(clip)):
        expected = corrupt(frame, "fog", 3, seed_for(f"drive_{i:06d}", "fog", 3))
        assert np.abs(result.frame(i)[0].astype(int) - expected).mean() < 4  # kept as JPEG
        assert np.abs(result.frame(i)[0].astype(int) - frame).mean() > 8
    assert [b.proto.label for b in at.get("download_button")][-1] == "Side by side (MP4)"


# ---------------------------------------------------------------- derived models (pruned, INT8)

def make_derived_data(dashboard_data, tmp: Path) -> SimpleNamespace:
    """`dashboard_data` plus the deployment variants `engine compress` records for its DeepLabV3-R50
    run (+prune0.5, +int8, and +prune0.5+int8 made from the pruned one): runs linked to their parent
    with their derivation, evaluated on the parent's latency setup, and a checkpoint each under
    weights/<derived name>/best.pt (the parent's file: nothing here loads them). In a copy of the store
    and a weights folder of its own under `tmp`."""
    from engine.store import Store
    from tests.test_dashboard_logic import record_model

    db, weights = tmp / "results.db", tmp / "weights"
    with sqlite3.connect(dashboard_data.db.removeprefix("sqlite:///")) as src, sqlite3.connect(db) as dst:
        src.backup(dst)
    weights.mkdir()
    for variant in dashboard_data.variants:
        (weights / variant).symlink_to(Path(dashboard_data.weights) / variant, target_is_directory=True)
    parent_variant = dashboard_data.variants[0]
    url = f"sqlite:///{db}"
    with Store(url) as store:
        parent = next(r for r in store.leaderboard() if r["variant"] == parent_variant)
        setup = dict(device=parent["latency_device"], threads=parent["latency_threads"],
                     resolution=parent["latency_resolution"], dataset=parent["dataset"], arch=parent["arch"])
        ids, figures = {parent_variant: parent["run_id"]}, {}

        def derive(suffix, from_variant, method, ratio, miou_factor, size_factor, latency_factor):
            variant = f"{from_variant}{suffix}"
            base = figures.get(from_variant, parent)
            figures[variant] = {"miou": base["miou"] * miou_factor, "size_mb": base["size_mb"] * size_factor,
                                "latency_ms": base["latency_ms"] * latency_factor, "gflops": base["gflops"],
                                "params": base["params"]}
            ids[variant] = record_model(store, variant, setup["arch"], parent=ids[from_variant],
                                        derivation={"method": method, "ratio": ratio},
                                        precision="int8" if method == "int8" else "fp32",
                                        **{k: v for k, v in setup.items() if k != "arch"}, **figures[variant])
            (weights / variant).mkdir()
            (weights / variant / "best.pt").symlink_to(Path(dashboard_data.weights) / parent_variant / "best.pt")

        derive("+prune0.5", parent_variant, "prune", 0.5, 0.9, 0.55, 0.6)
        derive("+int8", parent_variant, "int8", None, 0.97, 0.26, 0.45)
        derive("+int8", f"{parent_variant}+prune0.5", "int8", None, 0.98, 0.26, 0.5)
    return SimpleNamespace(db=url, weights=weights, parent=parent_variant, ids=ids, figures=figures,
                           derived=[v for v in ids if v != parent_variant],
                           env={"RESULTS_DB": url, "WEIGHTS_DIR": str(weights), "SEGBENCH_OFFLINE": "1"})


@pytest.fixture(scope="module")
def derived_data(dashboard_data, tmp_path_factory):
    return make_derived_data(dashboard_data, tmp_path_factory.mktemp("derived"))


def test_leaderboard_lists_derived_models_under_their_parent(app, derived_data):
    at = app("leaderboard", derived_data.env)
    parent = derived_data.parent
    df = at.dataframe[0].value
    variants = list(df["variant"])
    i = variants.index(parent)
    assert variants[i:i + 4] == [parent, f"{parent}+int8", f"{parent}+prune0.5", f"{parent}+prune0.5+int8"]
    assert list(df["model"])[i:i + 4] == [parent, "↳ +int8", "↳ +prune0.5", "\u2003↳ +int8"]
    assert list(df["method"])[i:i + 4] == ["trained", "int8", "prune", "prune+int8"]
    row = df.set_index("variant").loc[f"{parent}+prune0.5+int8"]
    pruned = derived_data.figures[f"{parent}+prune0.5"]
    assert row["ratio"] == 0.5 and row["size_ratio"] == pytest.approx(0.26) and row["latency_ratio"] == pytest.approx(0.5)
    assert row["delta_miou"] == pytest.approx(pruned["miou"] * 0.98 - pruned["miou"])
    assert at.selectbox(key="leaderboard_sort").value == "miou"
    # the grid sorts nothing itself (a clicked heading would tear the tree apart): read-only, rows "dynamic"
    from streamlit.proto.Dataframe_pb2 import Dataframe as DataframeProto

    table = at.dataframe[0].proto
    assert table.editing_mode == DataframeProto.EditingMode.DYNAMIC and table.disabled
    for column in ("latency_ms", "size_mb", "model", "delta_miou"):
        at.selectbox(key="leaderboard_sort").set_value(column).run()
        assert not at.exception
        variants = list(at.dataframe[0].value["variant"])
        i = variants.index(parent)
        assert set(variants[i:i + 4]) == {parent, *derived_data.derived}, (column, variants)
        assert variants.index(f"{parent}+prune0.5+int8") == variants.index(f"{parent}+prune0.5") + 1
    assert "Deployment variants" in _texts(at, "caption")


def test_tradeoffs_join_derived_models_to_their_parent_with_a_symbol_per_method(app, derived_data):
    at = app("tradeoffs", derived_data.env)
    at.selectbox(key="tradeoff_axis").set_value("size_mb").run()
    spec = _spec(at.get("plotly_chart")[0])
    ids = derived_data.ids
    parent = derived_data.parent
    lines = {tuple(c[0] for c in d["customdata"]): d for d in spec["data"] if d.get("mode") == "lines"}
    assert set(lines) == {(ids[parent], ids[f"{parent}+prune0.5"]), (ids[parent], ids[f"{parent}+int8"]),
                          (ids[f"{parent}+prune0.5"], ids[f"{parent}+prune0.5+int8"])}
    symbols = {c[0]: d["marker"]["symbol"] for d in spec["data"] if d.get("mode") == "markers" and "customdata" in d
               for c in d["customdata"]}
    assert symbols[ids[parent]] == "circle" and symbols[ids[f"{parent}+prune0.5"]] == "diamond"
    assert symbols[ids[f"{parent}+int8"]] == "square" and symbols[ids[f"{parent}+prune0.5+int8"]] == "star"
    assert [d["name"] for d in spec["data"] if d.get("legend") == "legend2"] == ["trained", "pruned", "INT8",
                                                                                 "pruned + INT8"]
    assert all(v in at.get("plotly_chart")[0].proto.spec for v in derived_data.derived)
    assert "Pareto front** (Checkpoint size (MB)" in _texts(at, "markdown")
    at.selectbox(key="tradeoff_y").set_value("mpc").run()  # derived models have no sweep: not plotted, and said so
    assert not at.exception and "Not plotted:" in _texts(at, "caption")
    assert f"{parent}+int8 (no mPC)" in _texts(at, "caption")


def test_compare_and_coverage_offer_derived_models_and_compare_with_the_parent(app, derived_data):
    parent = derived_data.parent
    at = app("compare", derived_data.env)
    a = at.selectbox(key="pick_compare_a")
    trained = [p.name for p in derived_data.weights.iterdir() if p.is_symlink()]
    assert {o.split(" (")[0] for o in a.options} == {*trained, *derived_data.derived}
    a.set_value(f"{parent}+int8").run()
    button = at.button(key="compare_b_parent")
    assert button.label == f"Compare with its parent: B = {parent}"
    button.click().run()
    assert not at.exception
    assert at.selectbox(key="pick_compare_b").value == parent and at.selectbox(key="pick_compare_a").value == f"{parent}+int8"
    assert f"A ({parent}+int8) was made from B ({parent}): INT8." in _texts(at, "caption")
    at = app("coverage", derived_data.env)
    assert {o.split(" (")[0] for o in at.selectbox(key="pick_coverage_model").options} >= set(derived_data.derived)


def test_drilldown_matrix_cell_scatter_and_image_view_without_rerunning_models(app, dashboard_data):
    """The Drill-down on the two evaluations of `dashboard_data` (A's predictions kept, B's not): a
    confusion cell lists its images, an image opens with image | truth | A | B | errors, and changing
    a control re-draws from the predictions already made."""
    from engine.per_image import confusion_images
    from engine.store import Store

    at = app("drilldown")
    assert at.title[0].value == "Drill-down" and not at.error
    kept, recomputed = (dashboard_data.results[v]["evaluation_id"] for v in dashboard_data.variants)
    at.selectbox(key="drill_a").set_value(kept).run()
    offered = at.selectbox(key="drill_b").options  # none, or the other evaluation of the same images
    assert len(offered) == 2 and offered[1].startswith(f"{dashboard_data.variants[1]} · ") and f"#{recomputed}" in offered[1]
    at.selectbox(key="drill_b").set_value(recomputed).run()
    table = _frame_with(at, "A interior")
    assert list(table.columns) == ["A IoU", "A interior", "A boundary", "B IoU", "B interior", "B boundary",
                                   "B − A interior", "B − A boundary"] and len(table) == 19
    assert table.loc["road", "A IoU"] == pytest.approx(dashboard_data.results[dashboard_data.variants[0]]
                                                       ["per_class_iou"]["road"])
    # a click on the cell (ground truth road, predicted road): its images, most pixels first
    at.session_state["drill_cell"] = (0, 0)
    at.run()
    listed = _frame_with(at, "B pixels")
    with Store(dashboard_data.db) as s:
        rows = s.image_results(kept)
    assert list(listed["image"]) == [r["image"] for r in confusion_images(rows, 0, 0, 20)] and len(listed)
    assert "B pixels" in listed.columns and not at.exception
    # opening an image (what a scatter point or a listed row does): the image view, A from its kept PNG
    stem = listed["image"].iloc[0]
    at.session_state["drill_image"] = stem
    at.session_state["drill_tab"] = "Image"
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    captions = [e.captions[0] for e in at.get("image")]
    assert len(captions) == 6 and captions[1] == "ground truth"
    assert any("kept by the evaluation" in c for c in captions) and any("recomputed on cpu" in c for c in captions)
    assert sum("errors: wrong pixels" in c for c in captions) == 2
    assert at.session_state["inference_calls"] == 1  # B only: A's prediction was kept
    shown = [e.value for e in at.get("image")]
    at.slider(key="drill_alpha").set_value(0.2).run()
    at.button(key="drill_classes_none").click().run()
    assert at.session_state["inference_calls"] == 1 and [e.value for e in at.get("image")] != shown
    per_class = _frame_with(at, "A boundary")
    assert list(per_class.columns) == ["A IoU", "A boundary", "B IoU", "B boundary"]
    row = next(r for r in rows if r["image"] == stem)
    assert {m.label: m.value for m in at.metric}["A: mIoU of this image"] == f"{row['miou']:.3f}"


def _frame_with(at, column: str):
    """The first table on the page with this column (AppTest finds only widgets by key)."""
    return next(d.value for d in at.dataframe if column in d.value.columns)


# ---------------------------------------------------------------- published results (papers, model zoos)

@pytest.fixture(scope="module")
def published_data(dashboard_data, tmp_path_factory):
    """`dashboard_data`'s store, copied, with the repository's published results loaded into it."""
    from engine import published
    from engine.store import Store

    db = tmp_path_factory.mktemp("published") / "results.db"
    with sqlite3.connect(dashboard_data.db.removeprefix("sqlite:///")) as src, sqlite3.connect(db) as dst:
        src.backup(dst)
    url = f"sqlite:///{db}"
    with Store(url) as store:
        rows = sorted(published.read_table(), key=lambda r: -r["miou"])
        published.load(store)
    return SimpleNamespace(db=url, rows=rows, env={**dashboard_data.env, "RESULTS_DB": url})


def test_leaderboard_lists_published_results_apart_from_the_measured_runs(app, dashboard_data, published_data):
    at = app("leaderboard", published_data.env)
    measured = at.dataframe[0].value
    assert set(measured["variant"]) == set(dashboard_data.variants) | {"hrnetv2_w48_sgd"}  # no published row in it
    assert "Published results (Cityscapes val, single scale)" in [s.value for s in at.subheader]
    table = _frame_with(at, "fps_label")
    assert list(table["model"]) == [r["model"] for r in published_data.rows]
    assert list(table["url"].fillna("")) == [r["url"] or "" for r in published_data.rows]  # each with its link
    assert table["miou"].max() == 0.811
    hrnet = table.set_index("model").loc["HRNetV2-W48 (official; pytorch-v1.1 branch)"]
    assert (hrnet["gflops_label"], hrnet["fps_label"]) == ("696.2 at 2048x1024", "6.67 fps on V100 at 2048x1024")
    assert "not measured here" in _texts(at, "caption")
    # the headline figures are the measured runs' alone (a published 0.811 would be the best mIoU otherwise)
    best = max(r["miou"] for r in _leaderboard(dashboard_data))
    assert {m.label: m.value for m in at.metric}["Best mIoU"] == f"{best:.3f}" != "0.811"
    assert {m.label: m.value for m in at.metric}["Runs"] == str(len(measured))


def test_tradeoffs_overlay_published_results_as_hollow_markers_when_asked(app, published_data):
    at = app("tradeoffs", published_data.env)

    def hollow() -> dict[str, list]:
        spec = _spec(at.get("plotly_chart")[0])
        return {d["name"]: list(zip(_values(d["x"]), _values(d["y"]))) for d in spec["data"]
                if d.get("marker", {}).get("symbol") == "circle-open" and d["name"] != "Pareto front"}

    assert at.toggle(key="tradeoff_published").value is True  # on by default, on parameters
    shown = hollow()
    assert sorted(shown) == ["deeplabv3_r101 · published", "deeplabv3_r50 · published", "hrnetv2_w48 · published"]
    assert sorted(shown["hrnetv2_w48 · published"]) == [(65.0, 0.741), (pytest.approx(65.8), 0.811),
                                                       (pytest.approx(65.858659), 0.8065)]
    assert "Hollow markers" in _texts(at, "caption") and "not on Cityscapes" in _texts(at, "caption")
    assert "Pareto front" in _texts(at, "markdown") and "published" not in _texts(at, "markdown")  # runs only
    at.selectbox(key="tradeoff_axis").set_value("latency_ms").run()  # a published FPS never meets our latency
    assert hollow() == {} and "never put against the latency" in _texts(at, "caption")
    at.selectbox(key="tradeoff_axis").set_value("params_m").run()
    at.toggle(key="tradeoff_published").set_value(False).run()
    assert hollow() == {} and "Hollow markers" not in _texts(at, "caption") and not at.exception


# ---------------------------------------------------------------- setups, the budget picker, the report

@pytest.fixture(scope="module")
def two_setups(dashboard_data, tmp_path_factory):
    """A copy of `dashboard_data`'s store where the first variant was also profiled at 1024x512 (as
    `python -m engine profile --size 1024x512` records it): two setups, one measuring both runs."""
    from engine.profiling import Profile
    from engine.store import Store

    db = tmp_path_factory.mktemp("setups") / "results.db"
    with sqlite3.connect(dashboard_data.db.removeprefix("sqlite:///")) as src, sqlite3.connect(db) as dst:
        src.backup(dst)
    url = f"sqlite:///{db}"
    with Store(url) as s:
        run = next(r for r in s.leaderboard() if r["variant"] == dashboard_data.variants[0])
        s.record_profile(Profile(params=run["params"], size_mb=run["size_mb"], gflops=512.0, latency_ms=4321.0,
                                 device=run["latency_device"], threads=run["latency_threads"], precision="fp32",
                                 resolution="1024x512"),
                         run_id=run["run_id"], variant=run["variant"], checkpoint=run["checkpoint"], checkpoint_sha256=None)
        setups = s.cost_setups()
    return SimpleNamespace(env={**dashboard_data.env, "RESULTS_DB": url}, setups=setups)


def test_every_cost_is_shown_for_the_setup_chosen_in_the_sidebar(app, dashboard_data, two_setups):
    at = app("leaderboard", two_setups.env)
    small, large = two_setups.setups  # the setup both runs were measured on comes first, and is the default
    assert small["runs"] == 2 and large["runs"] == 1 and large["resolution"] == "1024x512"
    picker = at.selectbox(key="cost_setup")
    assert picker.value == small["setup"] and picker.options[1].startswith(f"1024x512, batch 1 · {large['device']}")
    assert "Fastest at 64x32" in {m.label for m in at.metric}
    picker.set_value(large["setup"]).run()
    df = at.dataframe[0].value.set_index("variant")
    first, second = dashboard_data.variants
    assert df.loc[first, "latency_ms"] == 4321.0 and df.loc[first, "gflops"] == 512.0
    assert df.loc[first, "cost_resolution"] == "1024x512" and df.loc[first, "latency_setup"].endswith(
        "1024x512, batch 1, fp32")
    assert np.isnan(df.loc[second, "latency_ms"]) and np.isnan(df.loc[second, "gflops"])  # not measured there
    assert {m.label: m.value for m in at.metric}["Fastest at 1024x512"] == "4321 ms"
    at.switch_page("views/tradeoffs.py").run()  # the choice holds on every page
    at.selectbox(key="tradeoff_axis").set_value("latency_ms").run()
    spec = _spec(at.get("plotly_chart")[0])
    assert spec["layout"]["xaxis"]["title"]["text"] == f"Latency (ms per image) on {large['label']}"
    assert f"{second} (no Latency (ms per image) on {large['label']})" in _texts(at, "caption")


def test_tradeoffs_budget_picker_recommends_and_says_why_the_others_are_out(app, derived_data):
    at = app("tradeoffs", derived_data.env)
    parent, figures = derived_data.parent, derived_data.figures
    assert "Recommended: " in _texts(at, "success")  # no limit: the most accurate run
    limit = figures[f"{parent}+int8"]["size_mb"] + 1  # only the two INT8 models are that small
    assert figures[f"{parent}+prune0.5+int8"]["size_mb"] < limit < figures[f"{parent}+prune0.5"]["size_mb"]
    assert figures[f"{parent}+int8"]["miou"] > figures[f"{parent}+prune0.5+int8"]["miou"]
    at.number_input(key="budget_size").set_value(limit).run()
    assert not at.exception
    assert f"Recommended: {parent}+int8**: the highest clean mIoU" in _texts(at, "success")
    ranked, excluded = _frame_with(at, "latency_precision"), _frame_with(at, "reason")
    assert list(ranked["name"]) == [f"{parent}+int8", f"{parent}+prune0.5+int8"]
    assert list(ranked["latency_precision"]) == ["int8", "int8"]
    reasons = excluded.set_index("name")["reason"]
    assert reasons[parent].startswith("checkpoint size (MB)") and reasons[parent].endswith(f"> {limit:.4g}")
    spec = _spec(at.get("plotly_chart")[0])
    assert [a["text"] for a in spec["layout"]["annotations"]] == ["recommended"]
    at.number_input(key="budget_size").set_value(0.001).run()
    assert "No model meets the budget" in _texts(at, "warning") and not at.exception


def test_report_page_builds_both_files(app, dashboard_data):
    from pypdf import PdfReader

    chromium = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    if not Path(chromium).is_file() and not os.environ.get("CI"):  # CI installs it: there its absence fails
        pytest.skip(f"no Chromium at {chromium} to print the PDF (apt-get install chromium)")

    at = app("report")
    assert at.title[0].value == "Report"
    assert set(at.multiselect(key="report_runs").value) == {r["run_id"] for r in _leaderboard(dashboard_data)}
    at.button[0].click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    built = at.session_state["report"]
    html = built["html"].decode()
    assert all(v in html for v in dashboard_data.variants) and html.startswith("<!DOCTYPE html>")
    pdf = PdfReader(io.BytesIO(built["pdf"]))
    assert len(pdf.pages) >= 2
    assert [b.proto.label for b in at.get("download_button")] == ["Download HTML", "Download PDF"]
