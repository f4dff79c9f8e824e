"""`python -m engine db migrate-to URL`: a real SQLite store copied into PostgreSQL (the throwaway
server of tests/postgres.py) and into another SQLite file, every row equal, ids and relations kept
(the published results of the repository's table and an imported run's `source` included)."""
from __future__ import annotations

import re

import pytest

from engine.classes import CLASS_NAMES
from engine import published
from engine.cli import main
from engine.metrics import Metrics
from engine.profiling import Profile
from engine.store import SCHEMA_VERSION, Store, StoreCopyError, copy_store

HP = {"schedule": {"epochs": 2, "optimizer": {"name": "sgd", "lr": 0.01}}, "crop": [64, 32]}
IMPORTED = {"format": "mmseg", "file": "deeplabv3_r50b-d8.pth", "sha256": "ef" * 32,
            "url": "https://download.openmmlab.com/x.pth", "published_miou": 0.7963}


def _run(store, variant, **over):
    kw = dict(variant=variant, arch="deeplabv3", backbone="resnet50", profile="quick", hyperparameters=HP,
              dataset="synthetic", data_root="/data/synthetic", train_images=4, val_images=2, device="cpu",
              code_version="abc")
    return store.start_run(**(kw | over))


def _source(tmp_path) -> str:
    """A SQLite store with real rows of every table (gaps in the ids included: a deleted-looking
    history is not renumbered)."""
    url = f"sqlite:///{tmp_path / 'source.db'}"
    with Store(url) as s:
        a, b, c = _run(s, "a"), _run(s, "b", uid="b" * 32), _run(s, "c", source=IMPORTED)
        for rid, mious in ((a, (0.1, 0.3)), (b, (0.2,))):
            for epoch, miou in enumerate(mious, 1):
                s.log_epoch(rid, epoch=epoch, iteration=10 * epoch, train_loss=1.0 / epoch, val_loss=None,
                            val_miou=miou, val_pixel_accuracy=0.8, lr=1e-3, seconds=1.5, images_per_second=4.0)
        s.finish_run(a, status="completed", train_seconds=3.0, images_per_second=4.0, checkpoint="/w/a/best.pt")
        s.finish_run(c, status="failed", error="TrainingDiverged: loss is nan")
        ious = {name: i / 100 for i, name in enumerate(CLASS_NAMES)} | {"train": float("nan")}
        for rid, miou in ((a, 0.31), (a, 0.33), (None, 0.5)):
            s.record_evaluation(run_id=rid, variant="a", checkpoint="/w/a/best.pt", checkpoint_sha256="ab" * 32,
                                dataset="synthetic", split="val", eval_size="64x32",
                                metrics=Metrics(miou, 0.9, ious, mean_loss=0.4, num_images=2),
                                profiles=[Profile(params=123456, size_mb=1.5, gflops=0.25, latency_ms=3.5, device="cpu",
                                                threads=2, precision="fp32", resolution="64x32")])
        confusion = _image_results()  # an evaluation with its per-image rows and confusion matrices
        s.record_evaluation(run_id=a, variant="a", checkpoint="/w/a/best.pt", checkpoint_sha256="ab" * 32,
                            dataset="synthetic", split="val", eval_size="64x32",
                            metrics=Metrics(0.4, 0.9, ious, num_images=2, confusion=confusion.confusion,
                                            boundary_confusion=confusion.results.boundary_confusion(),
                                            boundary_fraction=0.01),
                            images=confusion.results.results, source={"kind": "cityscapes", "root": "/data/synthetic"},
                            predictions_dir="/data/predictions/a/0123456789ab")
        s.record_benchmark(kind="video", variant="a", size="64x32", device="cpu", threads=2, precision="fp32",
                           backend="eager", torch_version="2.4", metrics={"fps": 12.5, "frames": [1, 2]})
        s.record_checkpoint(tmp_path / "w" / "best.pt", "cd" * 32, kind="best", run_uid="b" * 32, run_id=b)
        s.record_evaluation(run_id=a, variant="a", checkpoint="/w/a/best.pt", checkpoint_sha256="ab" * 32,
                            dataset="synthetic-acdc", condition="fog", split="val", eval_size="64x32",
                            metrics=Metrics(0.2, 0.8, ious, num_images=2))
        m = Metrics(0.2, 0.8, ious, num_images=2)
        s.record_robustness(run_id=a, variant="a", checkpoint="/w/a/best.pt", checkpoint_sha256="ab" * 32,
                            dataset="synthetic", split="val", eval_size="64x32", library="imagecorruptions-imaug 1.1.5",
                            clean=Metrics(0.33, 0.9, ious, num_images=2), mpc=0.2, rpc=0.2 / 0.33,
                            groups={"noise": 0.2},
                            results=[{"corruption": "shot_noise", "group": "noise", "severity": 2, "metrics": m}])
        published.load(s)  # the repository's published results
    return url


def _image_results():
    """Two hand-made images' results (`engine.metrics.ImageResults`) and their summed confusion."""
    from types import SimpleNamespace

    import numpy as np
    import torch

    from engine.metrics import ImageResults

    acc = ImageResults([(0, "img_0", "city", "leftImg8bit/val/city/img_0.png"),
                        (1, "img_1", "city", "leftImg8bit/val/city/img_1.png")])
    label = np.zeros((6, 8), np.uint8)
    label[:, 4:], label[0] = 13, 255
    total = 0
    for pred_edge in (4, 6):
        pred = np.zeros_like(label)
        pred[:, pred_edge:] = 13
        total = total + acc.add(torch.from_numpy(label), torch.from_numpy(pred))
    return SimpleNamespace(results=acc, confusion=total.tolist())


def _everything(url, tmp_path) -> dict:
    with Store(url) as s:
        runs = s.runs()
        evaluations = s.evaluations()
        return {"runs": runs, "epochs": {r["id"]: s.epochs(r["id"]) for r in runs}, "evaluations": evaluations,
                "images": {e["id"]: s.image_results(e["id"]) for e in evaluations},
                "leaderboard": s.leaderboard(), "benchmarks": s.benchmarks(), "class_ious": s.class_iou_table(),
                "checkpoint": s.checkpoint_record(tmp_path / "w" / "best.pt"), "robustness": s.robustness(),
                "published": s.published(), "costs": s.cost_profiles(), "setups": s.cost_setups()}


def test_migrate_to_copies_every_row(tmp_path, store_url):
    src = _source(tmp_path)
    counts = copy_store(src, store_url)
    assert counts == {"runs": 3, "epochs": 3, "evaluations": 5, "class_ious": 5 * len(CLASS_NAMES),
                      "checkpoints": 1, "benchmarks": 1, "robustness_sweeps": 1, "corruption_results": 1,
                      "image_results": 2, "published_results": len(published.read_table()), "cost_profiles": 3}
    before, after = _everything(src, tmp_path), _everything(store_url, tmp_path)
    assert after == before
    with_images = next(e for e in after["evaluations"] if e["images"])
    assert with_images["images"] == 2
    assert with_images["boundary_confusion"] == _image_results().results.boundary_confusion()
    rows = after["images"][with_images["id"]]
    assert [r["image"] for r in rows] == ["img_0", "img_1"] and rows[1]["confusion"][1] == [13, 0, 10]
    assert after["evaluations"][0]["per_class_iou"]["train"] is None and after["checkpoint"]["run_id"] == 2
    assert [r["variant"] for r in after["leaderboard"]] == ["a", "b", "c"]
    assert after["leaderboard"][2]["source"] == IMPORTED and after["leaderboard"][0]["source"] is None
    assert len(after["published"]) == len(published.read_table()) and after["published"][0]["miou"] == 0.811
    assert [c["evaluation_id"] for c in after["costs"]] == [1, 2, 3] and after["setups"][0]["runs"] == 1
    assert {r["key"] for r in after["published"]} == {r["key"] for r in published.read_table()}

    with Store(store_url) as s:  # the sequences were moved past the copied ids
        rid = _run(s, "new")
        s.log_epoch(rid, epoch=1, iteration=1, train_loss=1, val_loss=1, val_miou=0.5, val_pixel_accuracy=1,
                    lr=1, seconds=1, images_per_second=1)
        bid = s.record_benchmark(kind="video", variant="new", size="64x32", device="cpu", threads=1,
                                 precision="fp32", backend="eager", torch_version="2.4", metrics={})
        eid = s.record_evaluation(run_id=rid, variant="new", checkpoint="/w/n.pt", checkpoint_sha256=None,
                                  dataset="synthetic", split="val", eval_size="64x32",
                                  metrics=Metrics(0.1, 0.5, {"road": 0.5}, mean_loss=1.0, num_images=1),
                                  profiles=[Profile(params=1, size_mb=1.0, gflops=1.0, latency_ms=1.0, device="cpu",
                                                  threads=1, precision="fp32", resolution="64x32")])
        s.record_checkpoint(tmp_path / "w" / "last.pt", "ef" * 32, kind="last", run_id=rid)
        n = s.load_published([{"key": "new-paper", "model": "New", "miou": 0.5, "source": "a paper"}])
        assert (rid, bid, eid, n) == (4, 2, 6, 1)
        assert max(r["id"] for r in s.published()) == len(published.read_table()) + 1
        assert [e["id"] for e in s.epochs(rid)] == [4]
        assert s.checkpoint_record(tmp_path / "w" / "last.pt")["id"] == 2

    with pytest.raises(StoreCopyError, match="already holds results"):  # never into a store with results
        copy_store(src, store_url)


def test_a_version_5_store_migrates_then_copies(tmp_path, store_url):
    """A store as schema version 5 left it (no `published_results`, no `runs.source`, no `cost_profiles`)
    is upgraded when `migrate-to` opens it, then copied whole: its runs, and the published results
    loaded after."""
    import sqlite3

    src = _source(tmp_path)
    with sqlite3.connect(src.removeprefix("sqlite:///")) as c:
        c.execute("DROP TABLE published_results")
        c.execute("DROP TABLE cost_profiles")
        c.execute('ALTER TABLE runs DROP COLUMN "source"')
        c.execute("UPDATE meta SET value='5' WHERE key='schema_version'")
    counts = copy_store(src, store_url)
    assert counts["published_results"] == 0 and counts["runs"] == 3 and counts["image_results"] == 2
    assert counts["cost_profiles"] == 0  # its evaluations carried no costs
    with Store(src) as s:
        assert s.leaderboard()[2]["source"] is None and published.load(s) == len(published.read_table())
    with Store(store_url) as s:
        assert [r["source"] for r in s.leaderboard()] == [None] * 3 and s.published() == []
        assert published.load(s) == len(published.read_table()) and s.published()[0]["miou"] == 0.811
    with sqlite3.connect(src.removeprefix("sqlite:///")) as c:
        assert c.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == (str(SCHEMA_VERSION),)


def test_cli_migrate_to(tmp_path, store_url, capsys):
    src = _source(tmp_path)
    assert main(["db", "migrate-to", store_url, "--db", src]) == 0
    out = capsys.readouterr().out
    assert "copied" in out and "runs" in out and re.search(rf"class_ious +{5 * len(CLASS_NAMES)}\n", out)
    assert _everything(store_url, tmp_path) == _everything(src, tmp_path)

    assert main(["db", "migrate-to", store_url, "--db", src]) == 2  # the target now holds results
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "already holds results" in err and err.count("\n") == 1


@pytest.mark.parametrize("target", ["not a database url", "nosuchdb://x/y",
                                    "postgresql+psycopg://nobody@127.0.0.1:1/nowhere"])
def test_cli_migrate_to_bad_url(tmp_path, capsys, target):
    src = _source(tmp_path)
    assert main(["db", "migrate-to", target, "--db", src]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "password" not in err


def test_cli_migrate_from_missing_store(tmp_path, capsys):
    assert main(["db", "migrate-to", f"sqlite:///{tmp_path / 'b.db'}", "--db", f"sqlite:///{tmp_path / 'a.db'}"]) == 2
    assert "no results store" in capsys.readouterr().err
    assert not (tmp_path / "a.db").exists()
