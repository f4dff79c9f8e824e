"""Published results: the repository's table (engine/published_results.csv), read, checked and loaded
into real stores (SQLite files and PostgreSQL databases), kept apart from the runs measured here."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from engine import published
from engine.classes import CLASS_NAMES
from engine.cli import main
from engine.metrics import Metrics
from engine.profiling import Profile
from engine.store import Store

REPO = Path(__file__).resolve().parent.parent
REPORT = "Smart Cities Semantic Segmentation (the project's original report)"
OUR_ARCHS = {"deeplabv3_r50", "deeplabv3_r101", "hrnetv2_w48", "unet"}


def test_the_repository_table_parses_and_every_row_says_where_it_comes_from():
    rows = published.read_table()
    assert len(rows) >= 11 and len({r["key"] for r in rows}) == len(rows)
    for r in rows:
        assert 0 < r["miou"] <= 1 and r["model"] and (r["dataset"], r["split"]) == ("cityscapes", "val")
        assert r["url"] or r["source"] == REPORT, r["key"]  # a link, or the project's own report (no URL)
        assert r["url"] is None or (r["url"].startswith("https://github.com/") and "/blob/" in r["url"]), r["url"]
        assert r["arch"] in OUR_ARCHS | {"hrnetv2_w18"}
        assert (r["gflops"] is None) == (r["gflops_resolution"] is None)
        assert (r["fps"] is None) == (r["fps_device"] is None) == (r["fps_resolution"] is None)
    by_key = {r["key"]: r for r in rows}
    hrnet = by_key["hrnet-official-hrnetv2-w48-pytorch-v1.1-1024x512-484ep"]
    assert (hrnet["miou"], hrnet["params"], hrnet["gflops"], hrnet["gflops_resolution"]) == (
        0.811, 65_800_000, 696.2, "2048x1024")
    assert by_key["mmseg-fcn-hrnetv2p-w48-1024x512-160k"]["miou"] == 0.8065
    assert by_key["mmseg-deeplabv3-r101-d8-1024x512-80k"]["miou"] == 0.802
    assert by_key["mmseg-unet-s5-d16-fcn-1024x512-160k"]["fps"] == 3.05
    report = [r for r in rows if r["source"] == REPORT]
    assert sorted((r["arch"], r["miou"]) for r in report) == [("deeplabv3_r101", 0.6475), ("hrnetv2_w48", 0.741)]


HEADER = "key,model,arch,backbone,miou,params,gflops,gflops_resolution,fps,fps_device,fps_resolution,crop,schedule,source,url,note"
GOOD = "k1,Model A,unet,,0.5,,,,,,,,,a paper,,"


@pytest.mark.parametrize("bad,message", [
    ("k2,Model B,unet,,79.3,,,,,,,,,a paper,,", "miou must be a fraction in (0, 1]"),
    ("k2,Model B,unet,,0.7,,,,,,,,,,,", "no url and no source"),
    ("k2,,unet,,0.7,,,,,,,,,a paper,,", "no model"),
    ("k2,Model B,unet,,0.7,lots,,,,,,,,a paper,,", "params 'lots' is not a number"),
    ("k2,Model B,unet,,0.7,,12.5,,,,,,,a paper,,", "gflops without gflops_resolution"),
    ("k1,Model B,unet,,0.7,,,,,,,,,a paper,,", "key 'k1' already on line 3"),
    ("k2,Model B,unet,,0.7", "5 fields, the header has 16"),
])
def test_a_malformed_table_is_refused_naming_the_line(tmp_path, bad, message):
    path = tmp_path / "published.csv"
    path.write_text(f"# where the figures come from\n{HEADER}\n{GOOD}\n\n{bad}\n")
    with pytest.raises(published.PublishedTableError) as e:
        published.read_table(path)
    assert str(e.value).startswith(f"{path}:5: ") and message in str(e.value)
    path.write_text(f"# a comment only\n{GOOD}\n")
    with pytest.raises(published.PublishedTableError, match="the header lacks"):
        published.read_table(path)


def test_loading_twice_keeps_the_same_rows_apart_from_the_measured_runs(store_url):
    with Store(store_url) as s:
        rid = s.start_run(variant="unet_ce_dice", arch="unet", backbone="unet", profile="quick", hyperparameters={},
                          dataset="cityscapes", data_root="/data", train_images=4, val_images=2, device="cpu",
                          code_version="x")
        s.finish_run(rid, status="completed")
        s.record_evaluation(run_id=rid, variant="unet_ce_dice", checkpoint="/w/u.pt", checkpoint_sha256=None,
                            dataset="cityscapes", split="val", eval_size="64x32",
                            metrics=Metrics(0.2, 0.8, {n: 0.2 for n in CLASS_NAMES}, num_images=2),
                            profiles=[Profile(params=7, size_mb=1.0, gflops=1.0, latency_ms=2.0, device="cpu", threads=1,
                                            precision="fp32", resolution="64x32")])
        before = (s.leaderboard(), s.class_iou_table(), s.runs(), s.evaluations())
        table = published.read_table()
        assert published.load(s) == len(table)
        first = s.published()
        assert published.load(s) == len(table)
        assert s.published() == [r | {"loaded_at": r2["loaded_at"]} for r, r2 in zip(first, s.published())]
        assert [r["miou"] for r in first] == sorted((r["miou"] for r in table), reverse=True)
        assert (s.leaderboard(), s.class_iou_table(), s.runs(), s.evaluations()) == before  # never mixed in
        assert s.published(dataset="cityscapes") == s.published() and s.published(dataset="synthetic") == []
        changed = [dict(table[0], miou=0.5)]  # a corrected figure replaces the row of its key
        assert s.load_published(changed) == 1 and len(s.published()) == len(table)
        assert next(r for r in s.published() if r["key"] == table[0]["key"])["miou"] == 0.5


def test_cli_published_load_then_list(tmp_path, capsys):
    db = f"sqlite:///{tmp_path / 'results.db'}"
    assert main(["published", "--db", db]) == 0
    assert "python -m engine published --load" in capsys.readouterr().out
    n = len(published.read_table())
    run = [sys.executable, "-m", "engine", "published", "--db", db]  # the real entry point (3 s each: torch)
    out = subprocess.run(run + ["--load"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"loaded {n} published results from published_results.csv into sqlite:///")
    assert main(["published", "--load", "--db", db]) == 0  # again: idempotent
    assert capsys.readouterr().out.startswith(f"loaded {n} published results") and len(Store(db).published()) == n
    out = subprocess.run(run, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split()[:2] == ["model", "mIoU"] and len(lines) == 1 + n
    assert lines[1].startswith("HRNetV2-W48 (official; pytorch-v1.1 branch)") and "696.2 @ 2048x1024" in lines[1]
    assert main(["published", "--json", "--db", db]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["key"] for r in rows] == [r["key"] for r in Store(db).published()] and rows[0]["miou"] == 0.811
    assert Store(db).leaderboard() == []
