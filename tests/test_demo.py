"""`python -m engine demo` end to end, shrunk to one variant (UNet, compressed too) on a tiny synthetic set and a small sweep."""
from pathlib import Path

from engine import demo, settings


def test_demo_generates_data_trains_evaluates_and_prints_the_leaderboard(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(settings, "DATA_DIR", tmp_path)
    monkeypatch.setattr(settings, "SYNTHETIC_ROOT", tmp_path / "synthetic")
    monkeypatch.setattr(demo, "DEMO_DATA", dict(train=4, val=2, size=(128, 64), seed=0))
    monkeypatch.setattr(demo, "DEMO_SWEEP", dict(corruptions=["impulse_noise", "frost"], severities=[3]))
    monkeypatch.setattr(demo, "DEMO_COMPRESS", ("unet_ce_dice",))  # the smallest model: compress is the slow part
    monkeypatch.setattr(demo, "DEMO_COMPRESS_SETTINGS", dict(ratios=[0.5], finetune_iters=2, calibration_images=2))
    # costs at a deployment resolution other than the 64x32 the quick profile trains and evaluates at (the
    # product's default is 1024x512: seconds per forward here)
    monkeypatch.setenv("SEGBENCH_DEPLOY_SIZES", "96x48")
    db = f"sqlite:///{tmp_path / 'results.db'}"
    code = demo.run_demo(db=db, weights_dir=tmp_path / "weights", device="cpu", variants=["unet_ce_dice"],
                         dashboard=False)
    out = capsys.readouterr().out
    assert code == 0
    assert (tmp_path / "synthetic" / "README.txt").is_file()  # generated because it was absent
    assert (tmp_path / "weights" / "unet_ce_dice" / "best.pt").is_file()
    assert "unet_ce_dice" in out and "completed" in out and "not Cityscapes" in out
    assert "most-frequent-class baseline" in out
    from engine.store import Store

    store = Store(db)
    rows = {r["variant"]: r for r in store.leaderboard()}
    assert sorted(rows) == ["unet_ce_dice", "unet_ce_dice+int8", "unet_ce_dice+prune0.5"]
    row = rows.pop("unet_ce_dice")
    assert row["status"] == "completed" and row["miou"] is not None and row["latency_ms"] > 0
    # every run costed at the deployment resolution, on one setup, and the printed leaderboard says which
    assert {c["resolution"] for c in store.cost_profiles()} == {"96x48"} and len(store.cost_setups()) == 1
    assert {r["latency_resolution"] for r in store.leaderboard()} == {"96x48"}
    assert f"latency in ms on {store.cost_setups()[0]['label']}" in out
    for name, derived in rows.items():  # its deployment variants: evaluated, profiled, linked to it, printed
        assert derived["parent_run_id"] == row["run_id"] and derived["miou"] is not None and name in out
        assert derived["latency_precision"] == ("int8" if name.endswith("int8") else "fp32")
    assert row["mpc"] is not None and row["rpc"] is not None and "mPC" in out  # the sweep, on the leaderboard
    [sweep] = store.robustness()
    assert [(r["corruption"], r["severity"]) for r in sweep["results"]] == [("impulse_noise", 3), ("frost", 3)]
    assert (tmp_path / "corruption-cache").is_dir()
    from engine.published import read_table

    assert len(store.published()) == len(read_table())  # the published results, for the dashboard, kept apart
    [own] = [e for e in store.evaluations() if e["variant"] == "unet_ce_dice" and e["dataset"] == "synthetic"]
    assert own["images"] == 2 and own["boundary_confusion"] is not None  # per-image rows, for the Drill-down
    assert sorted(p.name for p in Path(own["predictions_dir"]).iterdir()) == sorted(
        f"{r['image']}.png" for r in store.image_results(own["id"]))  # its predictions kept, under data/
    assert Path(own["predictions_dir"]).is_relative_to(tmp_path / "predictions")
    assert sorted((e["dataset"], e["condition"]) for e in store.evaluations()) == [  # the other streets, kept apart
        ("synthetic", ""), ("synthetic", ""), ("synthetic", ""), ("synthetic-acdc", "fog"), ("synthetic-acdc", "night"), ("synthetic-acdc", "rain"),
        ("synthetic-acdc", "snow")]
