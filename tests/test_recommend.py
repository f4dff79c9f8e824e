"""The budget picker (`engine.recommend`, `python -m engine recommend`) on a real store whose figures
are known, and costs at deployment resolutions (`python -m engine profile`, `Store.leaderboard(setup=)`)."""
from __future__ import annotations

import json

import pytest

from engine import published
from engine.classes import CLASS_NAMES
from engine.cli import main
from engine.metrics import Metrics
from engine.profiling import Profile
from engine.recommend import Budget, BudgetError, recommend
from engine.setups import SetupError, setup_key
from engine.store import Store

XEON = "Intel Xeon Test"
CPU = setup_key("cpu", XEON, 2, "1024x512", 1)
CPU_FULL = setup_key("cpu", XEON, 2, "2048x1024", 1)
GPU = setup_key("cuda", "NVIDIA Test", None, "1024x512", 1)


def _cost(setup: str, *, size_mb, gflops, latency_ms, precision="fp32", params=10_000_000) -> Profile:
    kind, device, threads, resolution, batch = setup.split("|")
    return Profile(params=params, size_mb=size_mb, gflops=gflops, latency_ms=latency_ms, device=device,
                   threads=2 if threads == "-" else int(threads), precision=precision, resolution=resolution,
                   batch=int(batch), device_type=kind)


def _run(s: Store, variant: str, miou: float, costs: list[Profile], *, rpc=None, parent=None, method=None,
         source=None, status="completed") -> int:
    rid = s.start_run(variant=variant, arch=variant.split("_")[0], backbone="b", profile="quick", hyperparameters={},
                      dataset="cityscapes", data_root="/data", train_images=4, val_images=2, device="cpu",
                      code_version="test", parent_run_id=parent, derivation={"method": method} if method else None,
                      source=source)
    s.record_evaluation(run_id=rid, variant=variant, checkpoint=f"/w/{variant}/best.pt", checkpoint_sha256=None,
                        dataset="cityscapes", split="val", eval_size="2048x1024",
                        metrics=Metrics(miou, 0.9, {n: miou for n in CLASS_NAMES}, num_images=2), profiles=costs)
    if rpc is not None:
        s.record_robustness(run_id=rid, variant=variant, checkpoint="/w/x.pt", checkpoint_sha256=None,
                            dataset="cityscapes", split="val", eval_size="2048x1024", library="imagecorruptions test",
                            clean=Metrics(miou, 0.9, {}, num_images=2), mpc=miou * rpc, rpc=rpc, groups={}, results=[])
    s.finish_run(rid, status=status)
    return rid


@pytest.fixture(scope="module")
def budget_store(tmp_path_factory):
    """Five evaluated runs with known figures, costs on three setups (CPU at 1024x512 and 2048x1024,
    CUDA at 1024x512), one sweep each for two of them, a failed run and the published table."""
    url = f"sqlite:///{tmp_path_factory.mktemp('budget') / 'results.db'}"
    with Store(url) as s:
        ids = {}
        ids["deeplabv3_r101"] = _run(s, "deeplabv3_r101", 0.70, [
            _cost(CPU, size_mb=240, gflops=500, latency_ms=400), _cost(CPU_FULL, size_mb=240, gflops=2000, latency_ms=1700)],
            rpc=0.60)
        ids["hrnetv2_w48"] = _run(s, "hrnetv2_w48", 0.72, [_cost(CPU, size_mb=260, gflops=300, latency_ms=900)], rpc=0.50)
        ids["hrnetv2_w48+int8"] = _run(s, "hrnetv2_w48+int8", 0.71, [
            _cost(CPU, size_mb=66, gflops=300, latency_ms=300, precision="int8")],
            parent=ids["hrnetv2_w48"], method="int8")
        ids["unet"] = _run(s, "unet", 0.60, [_cost(GPU, size_mb=120, gflops=700, latency_ms=20,
                                                    precision="bf16-autocast")])
        ids["hrnetv2_w48_official"] = _run(s, "hrnetv2_w48_official", 0.80, [
            _cost(CPU, size_mb=270, gflops=300, latency_ms=1200)], source={"format": "hrnet-official"})
        _run(s, "deeplabv3_r50", 0.99, [], status="failed")
        published.load(s)
    return url, ids


def _names(rows):
    return [r["name"] for r in rows]


def test_latency_budget_on_a_setup_gives_the_known_answer_and_exclusions(budget_store):
    url, ids = budget_store
    with Store(url) as s:
        rec = recommend(s, Budget(max_latency_ms=500, latency_setup="xeon 1024x512"))
    assert rec.setup == CPU and rec.dataset == "cityscapes"
    assert rec.recommended == "hrnetv2_w48+int8" and _names(rec.ranked) == ["hrnetv2_w48+int8", "deeplabv3_r101"]
    assert rec.ranked[0]["method"] == "int8" and rec.ranked[0]["latency_precision"] == "int8"
    reasons = {r["name"]: r["reason"] for r in rec.excluded}
    assert reasons == {
        "hrnetv2_w48": f"latency (ms) 900 > 500 on {XEON} (CPU, 2 threads), 1024x512, batch 1",
        "hrnetv2_w48_official": f"latency (ms) 1200 > 500 on {XEON} (CPU, 2 threads), 1024x512, batch 1",
        "unet": f"not measured: no latency on {XEON} (CPU, 2 threads), 1024x512, batch 1",
    }
    assert [r["not_measured"] for r in rec.excluded if r["name"] == "unet"] == [True]
    assert next(r for r in rec.excluded if r["name"] == "hrnetv2_w48_official")["method"] == "imported"
    assert rec.reason == (f"hrnetv2_w48+int8: the highest clean mIoU (0.710) among the 2 of 5 models with latency (ms) "
                          f"≤ 500 on {XEON} (CPU, 2 threads), 1024x512, batch 1; 1.0 points above the next, "
                          "deeplabv3_r101 (0.700).")
    assert "deeplabv3_r50" not in _names(rec.ranked) + _names(rec.excluded)  # failed: never a candidate
    assert {p["name"] for p in rec.published} == {r["model"] for r in published.read_table()}  # apart, never ranked


def test_every_limit_and_the_first_one_broken(budget_store):
    url, _ = budget_store
    with Store(url) as s:
        rec = recommend(s, Budget(min_miou=0.65, min_rpc=0.55, max_size_mb=250, latency_setup="1024x512 xeon"))
        assert rec.recommended == "deeplabv3_r101" and _names(rec.ranked) == ["deeplabv3_r101"]
        reasons = {r["name"]: r["reason"] for r in rec.excluded}
        assert reasons["unet"] == "clean mIoU 0.600 < 0.650"                      # the first limit, in LIMITS' order
        assert reasons["hrnetv2_w48"] == "rPC 0.500 < 0.550"
        assert reasons["hrnetv2_w48+int8"] == "not measured: no corruption sweep (rPC)"
        gflops = recommend(s, Budget(max_gflops=400, latency_setup=CPU))
        assert _names(gflops.ranked) == ["hrnetv2_w48_official", "hrnetv2_w48", "hrnetv2_w48+int8"]
        assert {r["name"]: r["reason"] for r in gflops.excluded} == {"deeplabv3_r101": "GFLOPs 500 > 400 at 1024x512",
                                                                    "unet": "GFLOPs 700 > 400 at 1024x512"}
        # the same limit at full resolution: only the run measured there has a figure to hold to it
        full = recommend(s, Budget(max_gflops=2500, latency_setup="2048x1024"))
        assert _names(full.ranked) == ["deeplabv3_r101"]
        assert all(r["reason"] == "not measured: no GFLOPs at 2048x1024" for r in full.excluded)
        nothing = recommend(s, Budget(max_size_mb=10, latency_setup=CPU))
        assert nothing.recommended is None and nothing.ranked == [] and len(nothing.excluded) == 5
        assert nothing.reason.startswith("No model meets the budget (checkpoint size (MB) ≤ 10)")
        by_mpc = recommend(s, Budget(rank_by="mpc", latency_setup=CPU))
        assert _names(by_mpc.ranked) == ["deeplabv3_r101", "hrnetv2_w48"]  # 0.42 > 0.36
        assert by_mpc.reason.startswith("deeplabv3_r101: the highest mPC (0.420) among all 2 evaluated models")


def test_a_setup_must_name_one_the_store_has(budget_store):
    url, _ = budget_store
    with Store(url) as s:
        with pytest.raises(SetupError, match="no setup in the store matches 'tpu'"):
            recommend(s, Budget(max_latency_ms=100, latency_setup="tpu"))
        with pytest.raises(SetupError, match="2 setups in the store match 'xeon'"):
            recommend(s, Budget(max_latency_ms=100, latency_setup="xeon"))
        with pytest.raises(BudgetError, match="no run of cityscapes was evaluated on acdc/fog"):
            recommend(s, Budget(rank_by="miou@acdc/fog"))
        with pytest.raises(BudgetError, match="no evaluated run trained on 'mapillary'"):
            recommend(s, Budget(), dataset="mapillary")
        assert recommend(s, Budget()).setup == CPU  # default: the setup most runs were measured on


def test_leaderboard_costs_come_from_one_setup_only(budget_store):
    url, ids = budget_store
    with Store(url) as s:
        # most runs first; of two with one run each, the later measured
        assert [(x["setup"], x["runs"]) for x in s.cost_setups()] == [(CPU, 4), (GPU, 1), (CPU_FULL, 1)]
        rows = {r["variant"]: r for r in s.leaderboard(setup=GPU)}
        assert rows["unet"]["latency_ms"] == 20 and rows["unet"]["latency_precision"] == "bf16-autocast"
        # on CUDA the others have no latency; their GFLOPs at 1024x512 are known from the CPU profile
        assert rows["deeplabv3_r101"]["latency_ms"] is None and rows["deeplabv3_r101"]["gflops"] == 500
        assert rows["deeplabv3_r101"]["latency_resolution"] == "1024x512" and rows["deeplabv3_r101"]["size_mb"] == 240
        full = {r["variant"]: r for r in s.leaderboard(setup=CPU_FULL)}
        assert full["deeplabv3_r101"]["gflops"] == 2000 and full["hrnetv2_w48"]["gflops"] is None
        assert {r["cost_setup"] for r in full.values()} == {CPU_FULL}


def test_cli_recommend_json_and_text(budget_store, capsys):
    url, _ = budget_store
    assert main(["recommend", "--db", url, "--max-latency-ms", "500", "--latency-setup", "xeon 1024x512",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["recommended"] == "hrnetv2_w48+int8"
    assert [r["name"] for r in out["ranked"]] == ["hrnetv2_w48+int8", "deeplabv3_r101"]
    assert out["ranked"][0]["latency_ms"] == 300 and out["ranked"][0]["size_mb"] == 66
    assert {r["name"]: r["reason"].split(" ")[0] for r in out["excluded"]} == {
        "hrnetv2_w48": "latency", "hrnetv2_w48_official": "latency", "unet": "not"}
    assert main(["recommend", "--db", url, "--max-size-mb", "250", "--latency-setup", CPU]) == 0
    text = capsys.readouterr().out
    assert "Recommended: hrnetv2_w48" in text and "checkpoint size (MB) 270 > 250" in text
    assert main(["recommend", "--db", url, "--max-latency-ms", "5", "--latency-setup", "tpu"]) == 2
    assert "no setup in the store matches 'tpu'" in capsys.readouterr().err
    assert main(["recommend", "--db", url, "--rank-by", "accuracy"]) == 2
    assert "rank by miou, mpc or miou@DATASET" in capsys.readouterr().err


def test_profile_records_each_resolution_and_the_default_is_1024x512(trained, tmp_path, monkeypatch, capsys):
    """`python -m engine profile` on a real checkpoint: each size its own setup; with no size and no
    SEGBENCH_DEPLOY_SIZES, the product's default deployment resolution."""
    import sqlite3

    db = f"sqlite:///{tmp_path / 'results.db'}"
    with sqlite3.connect(trained.db.removeprefix("sqlite:///")) as src, sqlite3.connect(tmp_path / "results.db") as dst:
        src.backup(dst)
    with Store(db) as s:
        before = {c["resolution"] for c in s.cost_profiles()}   # the fixture's own evaluation profiled it
    args = ["profile", "--variant", trained.variant, "--weights-dir", str(trained.weights), "--db", db,
            "--device", "cpu", "--repeats", "1"]
    assert main(args + ["--size", "96x48,128x64", "--json"]) == 0
    profiles = json.loads(capsys.readouterr().out)
    assert [p["resolution"] for p in profiles] == ["96x48", "128x64"]
    assert profiles[1]["gflops"] == pytest.approx(profiles[0]["gflops"] * (128 * 64) / (96 * 48), rel=0.05)
    monkeypatch.delenv("SEGBENCH_DEPLOY_SIZES")
    assert main(args) == 0
    assert "at 1024x512:" in capsys.readouterr().out
    with Store(db) as s:
        by_resolution = {c["resolution"]: c for c in s.cost_profiles()}
        assert set(by_resolution) - before == {"96x48", "128x64", "1024x512"}
        run_id = s.runs()[0]["id"]
        assert {c["run_id"] for c in by_resolution.values()} == {run_id}
        at = s.leaderboard(setup=by_resolution["1024x512"]["setup"])[0]
        assert at["latency_resolution"] == "1024x512" and at["gflops"] > by_resolution["128x64"]["gflops"] * 50
