"""`python -m engine demo` end to end, shrunk to one variant on a tiny synthetic set."""
from engine import demo, settings


def test_demo_generates_data_trains_evaluates_and_prints_the_leaderboard(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(settings, "SYNTHETIC_ROOT", tmp_path / "synthetic")
    monkeypatch.setattr(demo, "DEMO_DATA", dict(train=4, val=2, size=(128, 64), seed=0))
    db = f"sqlite:///{tmp_path / 'results.db'}"
    code = demo.run_demo(db=db, weights_dir=tmp_path / "weights", device="cpu", variants=["deeplabv3_r50_adam"],
                         dashboard=False)
    out = capsys.readouterr().out
    assert code == 0
    assert (tmp_path / "synthetic" / "README.txt").is_file()  # generated because it was absent
    assert (tmp_path / "weights" / "deeplabv3_r50_adam" / "best.pt").is_file()
    assert "deeplabv3_r50_adam" in out and "completed" in out and "not Cityscapes" in out
    assert "most-frequent-class baseline" in out
    from engine.store import Store

    [row] = Store(db).leaderboard()
    assert row["status"] == "completed" and row["miou"] is not None and row["latency_ms"] > 0
