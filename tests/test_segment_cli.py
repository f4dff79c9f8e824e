"""`segment`, `coverage`, `bench` and `export-onnx` from the command line, on a real tiny checkpoint."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from engine import runtime, video
from engine.bench import synthetic_clip
from engine.classes import NUM_CLASSES
from engine.cli import main
from engine.coverage import CSV_COLUMNS, SUMMARY_COLUMNS
from engine.data.synthetic import render_scene
from engine.store import Store


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("inputs")
    (d / "folder").mkdir()
    for k, (w, h) in enumerate([(96, 48), (71, 53)]):
        Image.fromarray(render_scene(np.random.default_rng(k), w, h)[0]).save(d / "folder" / f"img{k}.png")
    synthetic_clip(d / "clip.mp4", (80, 40), frames=7)
    return d


def _ckpt_args(trained):
    return ["--variant", trained.variant, "--weights-dir", str(trained.weights), "--device", "cpu"]


def test_segment_images_folders_and_a_video(trained, inputs, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["segment", *_ckpt_args(trained), "--input", str(inputs / "folder"), str(inputs / "clip.mp4"),
               "--output", str(out), "--alpha", "0.6", "--classes", "flat", "sky", "--batch-size", "3", "--quiet"])
    assert rc == 0
    for k, size in enumerate([(96, 48), (71, 53)]):
        overlay, labels = Image.open(out / f"img{k}_overlay.png"), Image.open(out / f"img{k}_trainIds.png")
        assert overlay.size == labels.size == size and overlay.mode == "RGB" and labels.mode == "L"
        assert np.asarray(labels).max() < NUM_CLASSES
    info = video.probe(out / "clip_overlay.mp4")
    assert (info.codec, info.width, info.height, info.frames) == ("h264", 80, 40, 7)
    assert len(list((out / "clip_trainIds").glob("*.png"))) == 7
    assert "3 input(s) segmented" in capsys.readouterr().out


def test_overlapped_video_pipeline_equals_the_sequential_loop(trained, inputs, tmp_path):
    from engine.inference import InferenceOptions, Segmenter
    from engine.segment import segment_video

    seg = Segmenter(trained.weights / trained.variant / "best.pt", "cpu",
                    options=InferenceOptions(batch_size=3, channels_last=False, precision="fp32"))
    a = segment_video(seg, inputs / "clip.mp4", tmp_path / "a.mp4", overlapped=True, keep_labels=True, keep_overlays=True)
    b = segment_video(seg, inputs / "clip.mp4", tmp_path / "b.mp4", overlapped=False, keep_labels=True, keep_overlays=True)
    assert a["frames"] == b["frames"] == 7 and len(a["labels"]) == len(a["overlays"]) == 7
    assert all(np.array_equal(x, y) for x, y in zip(a["labels"], b["labels"]))
    # what the product promises: the same overlays, in the same order, handed to the encoder; not the same
    # MP4 bytes (libx264 is not bit-deterministic from run to run at sizes that are not multiples of 16)
    assert all(np.array_equal(x, y) for x, y in zip(a["overlays"], b["overlays"]))
    for name in ("a.mp4", "b.mp4"):  # each video holds those 7 overlays in order: frame k is closest to overlay k
        frames = list(video.read_frames(tmp_path / name))
        assert len(frames) == 7
        err = np.array([[np.abs(f.astype(int) - o).mean() for o in a["overlays"]] for f in frames])
        assert (err.argmin(axis=1) == np.arange(7)).all() and err.diagonal().max() < 8, err.round(1)


def test_segment_errors_are_one_line(trained, inputs, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "bad.mp4").write_bytes(b"not a video")
    # a file that cannot be used: exit 1 ("some inputs failed"); a bad flag: exit 2 (usage)
    for args, message, code in ((["--input", str(tmp_path / "notes.txt")], "unsupported file type .txt", 1),
                                (["--input", str(tmp_path / "missing.png")], "no such file", 1),
                                (["--input", str(tmp_path / "bad.mp4")], "bad.mp4: not a readable video", 1),
                                (["--input", str(inputs / "folder"), "--classes", "unicorn"], "unknown class or category", 2)):
        assert main(["segment", *_ckpt_args(trained), "--output", str(tmp_path / "o"), "--quiet", *args]) == code
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err


def test_coverage_cli_writes_the_dashboards_csv_schema(trained, inputs, tmp_path, capsys):
    rc = main(["coverage", *_ckpt_args(trained), "--input", str(inputs / "folder"), "--csv", str(tmp_path / "c.csv"),
               "--summary", str(tmp_path / "s.csv"), "--quiet"])
    assert rc == 0
    rows = list(csv.DictReader(open(tmp_path / "c.csv")))
    assert tuple(rows[0]) == CSV_COLUMNS and len(rows) == 2 * NUM_CLASSES
    for k, (w, h) in enumerate([(96, 48), (71, 53)]):
        mine = [r for r in rows if r["source"].endswith(f"img{k}.png")]
        assert sum(int(r["pixels"]) for r in mine) == w * h
        assert sum(float(r["share"]) for r in mine) == pytest.approx(1.0)
    assert tuple(next(csv.reader(open(tmp_path / "s.csv")))) == SUMMARY_COLUMNS
    assert "2 image(s)" in capsys.readouterr().out
    assert main(["coverage", *_ckpt_args(trained), "--input", str(inputs / "clip.mp4"), "--csv",
                 str(tmp_path / "v.csv")]) == 1
    assert "needs its GPX track (--gpx)" in capsys.readouterr().err and not (tmp_path / "v.csv").exists()


def test_bench_runs_on_a_tiny_input_records_and_agrees(trained, tmp_path, capsys, monkeypatch):
    db = f"sqlite:///{tmp_path / 'bench.db'}"
    common = ["--variants", trained.variant, "--weights-dir", str(trained.weights), "--device", "cpu", "--repeats", "1",
              "--db", db, "--json"]
    rc = main(["bench", *common, "--sizes", "64x32,80x40", "--frames", "3", "--batch-size", "2", "--precision", "fp32"])
    assert rc == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [r["size"] for r in rows] == ["64x32", "80x40"]
    for r in rows:
        assert {"variant", "size", "baseline_fps", "fast_fps", "speedup", "agreement"} <= set(r)
        assert r["frames"] == 3 and r["baseline_fps"] > 0 and r["fast_fps"] > 0
        assert r["agreement"] >= 0.99  # the float32 fast path (rewrites, channels_last, batches) keeps the labels
        assert r["precision"] == "fp32" and r["calibration"] is None
    recorded = Store(db).benchmarks(kind="video")
    assert [b["size"] for b in recorded] == ["64x32", "80x40"]
    assert recorded[0]["metrics"]["agreement"] == pytest.approx(rows[0]["agreement"])
    assert recorded[0]["precision"] == rows[0]["precision"] and recorded[0]["backend"] == "torch"
    assert rows[0]["rewrites"]["batchnorm_folded"] > 50
    # precision auto on a bf16 CPU (forced, so on any CPU): the calibration is recorded with the row
    monkeypatch.setattr(runtime, "cpu_has_fast_bf16", lambda: True)
    assert main(["bench", *common, "--sizes", "64x32", "--frames", "2", "--min-agreement", "0"]) == 0
    row = json.loads(next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("{")))
    last = Store(db).benchmarks(kind="video")[-1]
    assert row["precision"] == last["precision"] == "bf16"
    assert last["metrics"]["calibration"]["chosen"] == "bf16" and last["metrics"]["calibration"]["size"] == "64x32"


def test_onnx_backend_from_the_cli_matches_torch(trained, inputs, tmp_path):
    import shutil

    ckpt = tmp_path / "ckpt" / "best.pt"  # a copy: the ONNX export is written next to the checkpoint
    ckpt.parent.mkdir()
    shutil.copy(trained.weights / trained.variant / "best.pt", ckpt)
    common = ["segment", "--checkpoint", str(ckpt), "--device", "cpu", "--input", str(inputs / "folder"), "--quiet"]
    assert main([*common, "--output", str(tmp_path / "torch"), "--precision", "fp32"]) == 0
    assert main([*common, "--output", str(tmp_path / "onnx"), "--backend", "onnx"]) == 0
    assert (ckpt.parent / "best.onnx").is_file()
    for k in range(2):
        a = np.asarray(Image.open(tmp_path / "torch" / f"img{k}_trainIds.png"))
        b = np.asarray(Image.open(tmp_path / "onnx" / f"img{k}_trainIds.png"))
        assert np.mean(a == b) >= 0.999


def test_bench_train_records_training_and_data_pipeline_throughput(synth_root, tmp_path, capsys):
    db = f"sqlite:///{tmp_path / 'bench.db'}"
    rc = main(["bench", "--train", "--variants", "unet_ce_dice", "--size", "64x32", "--iters", "1", "--device", "cpu",
               "--data-root", str(synth_root), "--db", db, "--json"])
    assert rc == 0
    row = json.loads(next(line for line in capsys.readouterr().out.splitlines() if line.startswith("{")))
    assert row["variant"] == "unet_ce_dice" and row["size"] == "64x32"
    assert row["train_images_per_second"] > 0 and row["data_images_per_second"] > 0
    recorded = Store(db).benchmarks(kind="train")
    assert len(recorded) == 1 and recorded[0]["metrics"]["train_images_per_second"] == pytest.approx(
        row["train_images_per_second"])
