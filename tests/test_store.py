"""The results store against real databases (no mocks): SQLite files, and PostgreSQL databases of a
throwaway server (tests/postgres.py) wherever a test takes `store_url` or `store`."""
from __future__ import annotations

import json
import math
import os
import sqlite3
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from engine.classes import CLASS_NAMES
from engine.metrics import Metrics
from engine.profiling import Profile
from engine.store import SCHEMA_VERSION, Store, StoreUrlError, StoreVersionError

REPO = Path(__file__).resolve().parent.parent

HP = {"schedule": {"epochs": 3, "optimizer": {"name": "adamw", "lr": 6e-4}}, "batch_size": 8}


def _url(tmp_path, name="results.db"):
    return f"sqlite:///{tmp_path / name}"


def _sql(url: str, query: str, types: dict | None = None, **params) -> list[tuple]:
    """Run one statement on the database at `url` (either backend), committed; its rows, if any."""
    from sqlalchemy import bindparam, create_engine, text

    stmt = text(query)
    if types:
        stmt = stmt.bindparams(*(bindparam(k, type_=t) for k, t in types.items()))
    eng = create_engine(url)
    try:
        with eng.begin() as c:
            res = c.execute(stmt, params)
            return [tuple(r) for r in res] if res.returns_rows else []
    finally:
        eng.dispose()


@pytest.fixture
def store(store_url):
    s = Store(store_url)
    yield s
    s.close()


def _start(store, **over):
    kw = dict(variant="deeplabv3plus_r50", arch="deeplabv3plus", backbone="resnet50", profile="quick",
              hyperparameters=HP, dataset="synthetic", data_root="/data/synthetic", train_images=20,
              val_images=5, device="cpu", code_version="abc123")
    kw.update(over)
    return store.start_run(**kw)


def _ious(value=0.5, **over):
    d = {name: value for name in CLASS_NAMES}
    d.update(over)
    return d


def _evaluate(store, run_id, miou, variant="deeplabv3plus_r50", per_class_iou=None, profile=True, **over):
    metrics = Metrics(miou=miou, pixel_accuracy=0.9, mean_loss=0.4, per_class_iou=per_class_iou or _ious(miou),
                      num_images=5)
    cost = Profile(params=1000, size_mb=4.0, gflops=12.5, latency_ms=33.0, device="cpu", threads=4, precision="fp32",
                   resolution="512x256")
    kw = dict(run_id=run_id, variant=variant, checkpoint=f"/w/{variant}.pt", checkpoint_sha256="ab" * 32,
              dataset="synthetic", split="val", eval_size="512x256", metrics=metrics, profiles=[cost] if profile else [])
    kw.update(over)
    return store.record_evaluation(**kw)


def _epoch(store, run_id, epoch, miou=0.1, **over):
    kw = dict(epoch=epoch, iteration=10 * epoch, train_loss=1.0 / epoch, val_loss=1.2 / epoch, val_miou=miou,
              val_pixel_accuracy=0.8, lr=1e-3 / epoch, seconds=2.5, images_per_second=8.0)
    kw.update(over)
    store.log_epoch(run_id, **kw)


def test_full_round_trip(store):
    uid = "f" * 32
    rid = _start(store, uid=uid)
    for e, m in ((1, 0.10), (2, 0.30), (3, 0.25)):
        _epoch(store, rid, e, miou=m)
    store.finish_run(rid, status="completed", train_seconds=7.5, images_per_second=8.0, best_miou=0.30,
                     checkpoint="/w/best.pt")
    ious = _ious(0.4, road=0.95, train=None, bicycle=float("nan"))
    eid = _evaluate(store, rid, 0.42, per_class_iou=ious)

    run = store.run(rid)
    assert run == store.run_by_uid(uid)
    assert run["uid"] == uid and run["status"] == "completed" and run["error"] is None
    assert run["hyperparameters"] == HP and run["epochs_done"] == 3 and run["best_miou"] == pytest.approx(0.30)
    assert run["checkpoint"] == "/w/best.pt" and run["train_seconds"] == 7.5
    assert run["started_at"].tzinfo is not None and run["finished_at"] >= run["started_at"]
    assert store.run(9999) is None and store.run_by_uid("nope") is None

    eps = store.epochs(rid)
    assert [e["epoch"] for e in eps] == [1, 2, 3]
    assert [e["val_miou"] for e in eps] == pytest.approx([0.10, 0.30, 0.25])
    assert eps[1]["iteration"] == 20 and eps[1]["lr"] == pytest.approx(5e-4) and eps[1]["seconds"] == 2.5

    (ev,) = store.evaluations(rid)
    assert ev["id"] == eid and ev["miou"] == pytest.approx(0.42) and ev["peak_memory_mb"] is None
    assert ev["eval_size"] == "512x256" and ev["checkpoint_sha256"] == "ab" * 32
    (cost,) = store.cost_profiles([rid])  # measured beside the evaluation, in the same transaction
    assert (cost["evaluation_id"], cost["threads"], cost["resolution"], cost["batch"], cost["latency_ms"]) == \
        (eid, 4, "512x256", 1, 33.0)
    assert cost["setup"] == "cpu|cpu|4|512x256|1" and cost["setup_label"] == "cpu (CPU, 4 threads), 512x256, batch 1"
    assert ev["latency_ms"] is None  # costs live in cost_profiles alone
    assert list(ev["per_class_iou"]) == CLASS_NAMES  # ordered by class id
    assert ev["per_class_iou"]["road"] == pytest.approx(0.95)
    assert ev["per_class_iou"]["train"] is None and ev["per_class_iou"]["bicycle"] is None  # NaN -> None

    (row,) = store.leaderboard()
    assert row["run_id"] == rid and row["miou"] == pytest.approx(0.42) and row["status"] == "completed"
    assert (row["lr"], row["optimizer"], row["epochs"]) == (6e-4, "adamw", 3)
    assert row["weight_decay"] is None and row["train_size"] is None  # parts this run's recipe lacks
    assert row["params"] == 1000 and row["gflops"] == 12.5 and row["latency_ms"] == 33.0
    assert row["train_seconds"] == 7.5 and row["hyperparameters"] == HP
    assert [r["id"] for r in store.runs()] == [rid]

    table = store.class_iou_table()
    assert [(r["class_id"], r["class_name"]) for r in table] == list(enumerate(CLASS_NAMES))
    by_name = {r["class_name"]: r["iou"] for r in table}
    assert by_name["train"] is None and by_name["road"] == pytest.approx(0.95)
    assert all(r["run_id"] == rid and r["variant"] == "deeplabv3plus_r50" for r in table)
    # No NaN anywhere in the database (NULL instead).
    assert _sql(store.url, "SELECT COUNT(*) FROM class_ious WHERE iou IS NULL") == [(2,)]


def test_recipe_columns_are_read_from_a_recipe_as_stored():
    from engine.config import load_recipe
    from engine.store import recipe_columns

    cols = recipe_columns(load_recipe("hrnetv2_w48_adamw_dropout", "quick").to_dict())
    assert cols == {"optimizer": "adamw", "lr": 1e-4, "weight_decay": 0.0, "epochs": 18, "dropout": 0.3,
                    "batch_size": 4, "train_size": "64x32",
                    "description": "HRNetV2-W48, AdamW 1e-4, StepLR(5, 0.5), Dropout 0.3."}
    assert recipe_columns({})["lr"] is None and recipe_columns({"schedule": "odd"})["optimizer"] is None


def test_an_evaluation_without_a_profile_leaves_the_cost_columns_empty(store):
    rid = _start(store)
    _evaluate(store, rid, 0.5, profile=False)
    (ev,) = store.evaluations(rid)
    assert ev["miou"] == 0.5 and ev["num_images"] == 5
    assert ev["params"] is None and ev["latency_ms"] is None and ev["latency_device"] is None


@pytest.mark.parametrize("url", ["mysql://u@h/db", "oracle://u@h/db"])
def test_a_store_on_another_database_is_refused_in_one_line(url):
    with pytest.raises(StoreUrlError, match="SQLite or PostgreSQL"):
        Store(url)


def test_failed_run_in_leaderboard(store):
    ok = _start(store)
    store.finish_run(ok, status="completed")
    _evaluate(store, ok, 0.5)
    bad = _start(store, variant="bisenet")
    _epoch(store, bad, 1)
    store.finish_run(bad, status="failed", error="RuntimeError: CUDA out of memory")
    rows = store.leaderboard()
    assert [r["run_id"] for r in rows] == [ok, bad]
    failed = rows[1]
    assert failed["status"] == "failed" and failed["error"] == "RuntimeError: CUDA out of memory"
    assert failed["finished_at"] is not None
    assert all(failed[k] is None for k in ("miou", "pixel_accuracy", "params", "size_mb", "gflops", "latency_ms"))
    with pytest.raises(ValueError, match="status"):
        store.finish_run(bad, status="exploded")


def test_leaderboard_latest_evaluation_sorting_and_filters(store):
    a = _start(store, variant="a", arch="deeplabv3plus")
    b = _start(store, variant="b", arch="segformer", dataset="cityscapes")
    c = _start(store, variant="c", arch="segformer")  # never evaluated
    d = _start(store, variant="d", arch="bisenet")
    _evaluate(store, a, 0.90, variant="a")
    _evaluate(store, a, 0.20, variant="a")  # latest evaluation wins, even though it is worse
    _evaluate(store, b, 0.60, variant="b", per_class_iou=_ious(0.6), dataset="cityscapes")  # b's own dataset
    _evaluate(store, d, 0.70, variant="d")
    _evaluate(store, None, 0.99, variant="loose")  # no run: never on the leaderboard
    for r in (a, b, d):
        store.finish_run(r, status="completed")

    rows = store.leaderboard()
    assert [r["run_id"] for r in rows] == [d, b, a, c]
    assert [r["miou"] for r in rows][:3] == pytest.approx([0.70, 0.60, 0.20]) and rows[3]["miou"] is None

    assert [r["run_id"] for r in store.leaderboard(dataset="cityscapes")] == [b]
    assert [r["run_id"] for r in store.leaderboard(arch="segformer")] == [b, c]
    assert [r["run_id"] for r in store.leaderboard(status="running")] == [c]
    assert [r["run_id"] for r in store.leaderboard(arch="segformer", dataset="synthetic")] == [c]
    assert [r["id"] for r in store.runs(arch="segformer")] == [b, c]
    assert [r["id"] for r in store.runs(status="completed", dataset="synthetic")] == [a, d]

    assert len(store.evaluations()) == 5 and len(store.evaluations(a)) == 2
    table = store.class_iou_table([a, b])
    assert {r["run_id"] for r in table} == {a, b} and len(table) == 2 * len(CLASS_NAMES)
    assert [r["iou"] for r in table if r["run_id"] == a] == pytest.approx([0.20] * len(CLASS_NAMES))
    assert {r["run_id"] for r in store.class_iou_table()} == {a, b, d}


def test_sqlite_wal_busy_timeout_and_foreign_keys(tmp_path):
    db = tmp_path / "nested" / "dir" / "results.db"  # parent directories are created
    s = Store(f"sqlite:///{db}")
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == str(SCHEMA_VERSION)
    con.close()
    with s._engine.connect() as c:  # per-connection settings, checked on the store's own connection
        assert c.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
        assert c.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    with pytest.raises(KeyError):
        s.log_epoch(12345, epoch=1, iteration=1, train_loss=1, val_loss=1, val_miou=0, val_pixel_accuracy=0,
                    lr=0, seconds=1, images_per_second=1)
    s.close()


def _python(code: str, *args: str, **kw):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("RESULTS_DB", None)
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def _hold_exclusive_lock(db: Path) -> sqlite3.Connection:
    """A raw writer holding SQLite's strongest write lock, with an uncommitted run row."""
    con = sqlite3.connect(db, isolation_level=None)
    con.execute("BEGIN EXCLUSIVE")
    con.execute("UPDATE runs SET variant='uncommitted'")
    return con


READER = """
import json, sys, time
from engine.store import Store
t = time.perf_counter()
rows = Store(sys.argv[1]).leaderboard()
print(json.dumps({"variants": [r["variant"] for r in rows], "seconds": time.perf_counter() - t}))
"""


def test_reader_process_not_blocked_by_writer(tmp_path):
    url = _url(tmp_path)
    s = Store(url)
    rid = _start(s, variant="committed")
    _evaluate(s, rid, 0.5, variant="committed")
    con = _hold_exclusive_lock(tmp_path / "results.db")
    try:
        proc = _python(READER, url)
        out, err = proc.communicate(timeout=20)  # without WAL the reader would wait out the 30 s busy timeout
        assert proc.returncode == 0, err
        result = json.loads(out)
        assert result["variants"] == ["committed"]  # sees the committed state, not the open transaction
        assert result["seconds"] < 5
    finally:
        con.rollback()
        con.close()
        s.close()


WRITER = """
import sys
from engine.store import Store
s = Store(sys.argv[1])
print("opened", flush=True)
print(s.start_run(variant="from_child", arch="a", backbone="b", profile="quick", hyperparameters={},
                  dataset="synthetic", data_root="/d", train_images=1, val_images=1, device="cpu",
                  code_version="x"), flush=True)
"""


def test_concurrent_writer_waits_for_lock(tmp_path):
    url = _url(tmp_path)
    s = Store(url)
    _start(s, variant="parent")
    con = _hold_exclusive_lock(tmp_path / "results.db")
    proc = _python(WRITER, url)
    try:
        assert proc.stdout.readline().strip() == "opened"
        time.sleep(0.5)
        assert proc.poll() is None  # blocked on the lock, not failed with "database is locked"
        con.commit()
        out, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err
        assert int(out.strip()) == 2
    finally:
        if proc.poll() is None:
            proc.kill()
        con.close()
    assert [r["variant"] for r in s.runs()] == ["uncommitted", "from_child"]
    s.close()


def test_schema_version_mismatch(store_url):
    url = store_url
    Store(url).close()
    _sql(url, "UPDATE meta SET value='99' WHERE key='schema_version'")
    with pytest.raises(StoreVersionError, match=rf"schema version 99.*expects schema version {SCHEMA_VERSION}"):
        Store(url)


def test_log_epoch_is_upsert(store):
    rid = _start(store)
    _epoch(store, rid, 1, miou=0.1)
    _epoch(store, rid, 2, miou=0.2)
    _epoch(store, rid, 2, miou=0.35, iteration=999)  # resumed training re-logs epoch 2
    eps = store.epochs(rid)
    assert [(e["epoch"], e["iteration"]) for e in eps] == [(1, 10), (2, 999)]
    assert eps[1]["val_miou"] == pytest.approx(0.35)
    run = store.run(rid)
    assert run["epochs_done"] == 2 and run["best_miou"] == pytest.approx(0.35)


def test_results_db_env_var(tmp_path, monkeypatch):
    monkeypatch.setenv("RESULTS_DB", _url(tmp_path, "from_env.db"))
    s = Store()
    assert s.url == _url(tmp_path, "from_env.db")
    _start(s)
    s.close()
    assert (tmp_path / "from_env.db").exists()
    con = sqlite3.connect(tmp_path / "from_env.db")
    assert con.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 1
    con.close()


def test_benchmarks_round_trip(store):
    m = {"latency_ms": {"mean": 12.5, "p90": 14.0}, "throughput": 80.0, "bad": math.nan}
    b1 = store.record_benchmark(kind="inference", variant="a", size="512x256", device="cpu", threads=4,
                                precision="fp32", backend="eager", torch_version="2.4.0", metrics=m)
    b2 = store.record_benchmark(kind="train", variant="a", size="512x256", device="cuda", threads=None,
                                precision="amp", backend="eager", torch_version="2.4.0", metrics={"ips": 3.0})
    assert [b["id"] for b in store.benchmarks()] == [b1, b2]
    (inf,) = store.benchmarks("inference")
    assert inf["metrics"] == {"latency_ms": {"mean": 12.5, "p90": 14.0}, "throughput": 80.0, "bad": None}
    assert (inf["kind"], inf["threads"], inf["precision"], inf["torch_version"]) == ("inference", 4, "fp32", "2.4.0")
    assert inf["created_at"].tzinfo is not None
    assert [b["id"] for b in store.benchmarks("train")] == [b2] and store.benchmarks("nope") == []


def test_mark_stale_running(store):
    from engine.store import UTCDateTime

    old, busy, fresh, done = (_start(store, variant=v) for v in ("old", "busy", "fresh", "done"))
    store.finish_run(done, status="completed")
    _epoch(store, busy, 1)
    hour_ago = datetime.now(timezone.utc) - timedelta(hours=1)
    _sql(store.url, "UPDATE runs SET started_at=:t WHERE id IN (:a, :b, :c)", {"t": UTCDateTime()},
         t=hour_ago, a=old, b=busy, c=done)
    # "busy" started an hour ago but logged an epoch just now: still alive.
    assert store.mark_stale_running(600) == 1
    status = {r["variant"]: r["status"] for r in store.runs()}
    assert status == {"old": "interrupted", "busy": "running", "fresh": "running", "done": "completed"}
    assert store.run(old)["error"]
    assert store.mark_stale_running(600) == 0
    assert store.mark_stale_running(0) == 2 and len(store.runs(status="interrupted")) == 3


V5_EVALUATION_COLUMNS = ("confusion", "boundary_confusion", "boundary_fraction", "data_kind", "data_root",
                         "label_format", "predictions_dir")


OLD_COSTS = {"params": 1000, "size_mb": 4.0, "gflops": 12.5, "latency_ms": 33.0, "latency_device": "Xeon",
             "latency_threads": 4, "latency_precision": "fp32", "latency_resolution": "512x256"}


def _make_old_store(url: str, version: int = 1) -> tuple[str, int]:
    """A store as schema version 6 left it (today's tables minus `cost_profiles`: its evaluation's
    costs, OLD_COSTS, in the evaluation's own columns), version 5 (also minus `published_results` and
    `runs.source`), version 4 (also minus `image_results` and the evaluations'
    V5_EVALUATION_COLUMNS), version 3 (also minus `runs.parent_run_id` and `runs.derivation`),
    version 2 (also minus the robustness tables and `evaluations.condition`) or version 1 (also
    minus `checkpoints`); meta says which."""
    s = Store(url)
    rid = _start(s, variant=f"from_v{version}")
    _epoch(s, rid, 1, miou=0.25)
    eid = _evaluate(s, rid, 0.3, variant=f"from_v{version}", profile=False)
    s.close()
    _sql(url, "UPDATE evaluations SET " + ", ".join(f"{k}=:{k}" for k in OLD_COSTS) + " WHERE id=:id",
         id=eid, **OLD_COSTS)
    _sql(url, "DROP TABLE cost_profiles")
    if version <= 5:
        _sql(url, "DROP TABLE published_results")
        _sql(url, 'ALTER TABLE runs DROP COLUMN "source"')
    if version <= 4:
        _sql(url, "DROP TABLE image_results")
        for column in V5_EVALUATION_COLUMNS:
            _sql(url, f'ALTER TABLE evaluations DROP COLUMN "{column}"')
    if version <= 3:
        _sql(url, 'ALTER TABLE runs DROP COLUMN "parent_run_id"')
        _sql(url, 'ALTER TABLE runs DROP COLUMN "derivation"')
    if version <= 2:
        _sql(url, "DROP TABLE corruption_results")
        _sql(url, "DROP TABLE robustness_sweeps")
        _sql(url, 'ALTER TABLE evaluations DROP COLUMN "condition"')
    if version == 1:
        _sql(url, "DROP TABLE checkpoints")
    _sql(url, f"UPDATE meta SET value='{version}' WHERE key='schema_version'")
    return url, rid


def _make_v1_store(url: str) -> tuple[str, int]:
    return _make_old_store(url, 1)


def _tables(url: str) -> set[str]:
    from sqlalchemy import create_engine, inspect

    eng = create_engine(url)
    try:
        return set(inspect(eng).get_table_names())
    finally:
        eng.dispose()


def _columns(url: str, table: str) -> set[str]:
    from sqlalchemy import create_engine, inspect

    eng = create_engine(url)
    try:
        return {c["name"] for c in inspect(eng).get_columns(table)}
    finally:
        eng.dispose()


def _image_result(index: int, pred_offset: int = 0):
    """A hand-made `engine.metrics.ImageResult` of a 4x4 image: road (0) on the left half, car (13)
    on the right; the prediction shifts the edge right by `pred_offset` columns."""
    import numpy as np
    import torch

    from engine.metrics import ImageResults

    label = np.zeros((4, 4), np.uint8)
    label[:, 2:] = 13
    pred = np.zeros((4, 4), np.uint8)
    pred[:, 2 + pred_offset:] = 13
    acc = ImageResults([(index, f"img_{index}", "city", f"leftImg8bit/val/city/img_{index}.png")])
    acc.add(torch.from_numpy(label), torch.from_numpy(pred))
    return acc.results[0]


@pytest.mark.parametrize("version", [1, 2, 3, 4, 5, 6])
def test_old_store_migrates_to_current_version_keeping_its_rows(store_url, tmp_path, version):
    url, rid = _make_old_store(store_url, version)
    assert "cost_profiles" not in _tables(url)
    assert ("checkpoints" in _tables(url)) == (version >= 2)
    assert ("robustness_sweeps" in _tables(url)) == (version >= 3)
    assert ("parent_run_id" in _columns(url, "runs")) == (version >= 4)
    assert ("image_results" in _tables(url)) == (version >= 5)
    assert bool(set(V5_EVALUATION_COLUMNS) & _columns(url, "evaluations")) == (version >= 5)
    assert ("published_results" in _tables(url)) == ("source" in _columns(url, "runs")) == (version >= 6)
    s = Store(url)
    assert _sql(url, "SELECT value FROM meta WHERE key='schema_version'") == [(str(SCHEMA_VERSION),)]
    assert SCHEMA_VERSION == 7
    # the old evaluation's costs became a cost profile of their setup: the leaderboard shows them there
    (cost,) = s.cost_profiles()
    assert (cost["run_id"], cost["setup"], cost["latency_ms"], cost["gflops"], cost["precision"]) == \
        (rid, "cpu|Xeon|4|512x256|1", 33.0, 12.5, "fp32")
    assert [x["setup"] for x in s.cost_setups()] == ["cpu|Xeon|4|512x256|1"]
    top = s.leaderboard()[0]
    assert (top["latency_ms"], top["gflops"], top["size_mb"], top["latency_resolution"]) == (33.0, 12.5, 4.0, "512x256")
    assert {"checkpoints", "robustness_sweeps", "corruption_results", "image_results", "published_results"} <= _tables(url)
    assert set(V5_EVALUATION_COLUMNS) <= _columns(url, "evaluations") and "source" in _columns(url, "runs")
    assert [r["variant"] for r in s.runs()] == [f"from_v{version}"] and [e["epoch"] for e in s.epochs(rid)] == [1]
    assert s.leaderboard()[0]["miou"] == pytest.approx(0.3)  # the old evaluation: no condition, in-distribution
    [old] = s.evaluations()
    assert old["condition"] == "" and old["images"] == 0 and s.image_results(old["id"]) == []
    assert all(old[c] is None for c in V5_EVALUATION_COLUMNS)
    images = [_image_result(0), _image_result(1, pred_offset=1)]
    new = _evaluate(s, rid, 0.2, variant=f"from_v{version}", images=images, predictions_dir="/p/x",
                    source={"kind": "cityscapes", "root": "/data", "label_format": None})
    assert s.evaluation(new)["images"] == 2 and s.evaluation(new)["predictions_dir"] == "/p/x"
    assert s.evaluation(new)["data_kind"] == "cityscapes" and s.evaluation(old["id"])["images"] == 0
    rows = s.image_results(new)
    assert [(r["position"], r["image"], r["folder"]) for r in rows] == [(0, "img_0", "city"), (1, "img_1", "city")]
    assert rows[0]["miou"] == 1.0 and rows[1]["miou"] == pytest.approx((8 / 12 + 4 / 8) / 2)
    assert rows[1]["confusion"] == [[0, 0, 8], [13, 0, 4], [13, 13, 4]]  # the non-zero cells
    s.record_checkpoint(tmp_path / "w" / "best.pt", "cd" * 32, kind="best", run_uid="u", run_id=rid)
    assert s.checkpoint_record(tmp_path / "w" / "best.pt")["sha256"] == "cd" * 32
    assert s.leaderboard()[0]["parent_run_id"] is None and s.leaderboard()[0]["method"] is None
    child = _start(s, variant=f"from_v{version}+int8", parent_run_id=rid, derivation={"method": "int8"})
    s.update_derivation(child, seconds=1.5)
    row = next(r for r in s.leaderboard() if r["run_id"] == child)
    assert (row["parent_variant"], row["method"], row["derivation"]) == (f"from_v{version}", "int8",
                                                                         {"method": "int8", "seconds": 1.5})
    assert row["source"] is None and s.published() == []
    imported = _start(s, variant="deeplabv3_r50_mmseg", source={"format": "mmseg", "published_miou": 0.7963})
    assert next(r for r in s.leaderboard() if r["run_id"] == imported)["source"] == {"format": "mmseg",
                                                                                    "published_miou": 0.7963}
    assert s.load_published([{"key": "k", "model": "M", "miou": 0.8, "url": "https://x"}]) == 1
    assert [p["model"] for p in s.published()] == ["M"] and len(s.leaderboard()) == 3
    s.close()
    Store(url).close()  # opening the migrated store again is a no-op


def test_v1_store_opened_by_several_processes_at_once(store_url):
    url, rid = _make_v1_store(store_url)
    code = ("import sys; from engine.store import Store; s = Store(sys.argv[1]); "
            "print(len(s.runs()), s.checkpoint_record('/nowhere') is None)")
    procs = [_python(code, url) for _ in range(3)]
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        assert out.split() == ["1", "True"]
    assert _sql(url, "SELECT value FROM meta") == [(str(SCHEMA_VERSION),)]


def test_newer_schema_version_is_refused_untouched(store_url):
    url, _ = _make_v1_store(store_url)
    _sql(url, "UPDATE meta SET value='99' WHERE key='schema_version'")
    with pytest.raises(StoreVersionError, match=rf"has schema version 99, but this code expects schema version {SCHEMA_VERSION}"):
        Store(url)
    assert "checkpoints" not in _tables(url)  # nothing written to a store it cannot use


def test_record_checkpoint_upserts_by_resolved_path(store, tmp_path):
    rid = _start(store, uid="a" * 32)
    (tmp_path / "w").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "w", target_is_directory=True)
    store.record_checkpoint(tmp_path / "w" / "best.pt", "11" * 32, kind="best", run_uid="a" * 32, run_id=rid)
    store.record_checkpoint(tmp_path / "link" / ".." / "w" / "best.pt", "22" * 32, kind="best", run_id=rid)
    rec = store.checkpoint_record(tmp_path / "link" / "best.pt")  # same file through a symlinked folder
    assert rec["sha256"] == "22" * 32 and rec["path"] == str((tmp_path / "w" / "best.pt").resolve())
    assert rec["kind"] == "best" and rec["run_id"] == rid and rec["written_at"].tzinfo is not None
    assert store.checkpoint_record(tmp_path / "w" / "last.pt") is None
    assert _sql(store.url, "SELECT COUNT(*) FROM checkpoints") == [(1,)]


def test_other_streets_and_corruption_sweeps_never_stand_in_for_the_in_distribution_figures(store_url):
    s = Store(store_url)
    rid = _start(s)
    own = _evaluate(s, rid, 0.4)
    _evaluate(s, rid, 0.1, dataset="synthetic-acdc", condition="fog", profile=False)  # later, other streets
    _evaluate(s, rid, 0.2, dataset="bdd100k", profile=False)
    [row] = s.leaderboard()
    assert row["evaluation_id"] == own and row["miou"] == pytest.approx(0.4) and row["mpc"] is None
    assert [(e["dataset"], e["condition"]) for e in s.evaluations()] == [
        ("synthetic", ""), ("synthetic-acdc", "fog"), ("bdd100k", "")]
    assert [e["miou"] for e in s.evaluations(dataset="bdd100k")] == [pytest.approx(0.2)]
    assert {r["class_name"]: r["iou"] for r in s.class_iou_table()} == pytest.approx(_ious(0.4))

    def sweep(dataset, condition, clean, values):
        results = [{"corruption": c, "group": g, "severity": sev,
                    "metrics": Metrics(miou=v, pixel_accuracy=0.5, per_class_iou=_ious(v), num_images=5)}
                   for (c, g, sev), v in zip([("gaussian_noise", "noise", 1), ("fog", "weather", 3)], values)]
        return s.record_robustness(run_id=rid, variant="deeplabv3plus_r50", checkpoint="/w/x.pt",
                                   checkpoint_sha256="ab" * 32, dataset=dataset, condition=condition, split="val",
                                   eval_size="512x256", library="imagecorruptions-imaug 1.1.5",
                                   clean=Metrics(miou=clean, pixel_accuracy=0.9, per_class_iou=_ious(clean),
                                                 num_images=5),
                                   mpc=sum(values) / 2, rpc=sum(values) / 2 / clean,
                                   groups={"noise": values[0], "weather": values[1]}, results=results)

    first = sweep("synthetic", "", 0.4, [0.3, 0.1])
    sweep("synthetic-acdc", "night", 0.2, [0.05, 0.05])  # later, but on other streets
    [row] = s.leaderboard()
    assert row["robustness_id"] == first and row["mpc"] == pytest.approx(0.2) and row["rpc"] == pytest.approx(0.5)
    [latest] = s.robustness(latest=True)
    assert latest["id"] == first and latest["groups"] == {"noise": pytest.approx(0.3), "weather": pytest.approx(0.1)}
    assert [(r["corruption"], r["group"], r["severity"], r["miou"]) for r in latest["results"]] == [
        ("gaussian_noise", "noise", 1, pytest.approx(0.3)), ("fog", "weather", 3, pytest.approx(0.1))]
    assert latest["results"][1]["per_class_iou"] == pytest.approx(_ious(0.1))
    assert latest["clean_per_class_iou"] == pytest.approx(_ious(0.4))
    assert [w["condition"] for w in s.robustness()] == ["", "night"]
    s.close()
