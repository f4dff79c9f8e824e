"""`python -m engine clean` (`make clean`) removes what the demo made and keeps, and names, what a user made."""
from __future__ import annotations

import shutil
import sqlite3

import torch

from engine import checkpoints, settings
from engine.cli import main
from engine.store import Store


def _copy(trained, tmp_path):
    """The trained fixture's store and weights (a run on the synthetic scenes), copied: clean deletes files."""
    db = tmp_path / "results.db"
    with sqlite3.connect(trained.db.removeprefix("sqlite:///")) as src, sqlite3.connect(db) as dst:
        src.backup(dst)
    weights = tmp_path / "weights"
    shutil.copytree(trained.weights / trained.variant, weights / trained.variant)
    with Store(f"sqlite:///{db}") as store:  # the copies are the files the store knows
        for kind in ("best", "last"):
            path = weights / trained.variant / f"{kind}.pt"
            store.record_checkpoint(path, checkpoints.sha256(path), kind=kind, run_uid=trained.result.run_uid)
    return f"sqlite:///{db}", weights


def _user_run(store, weights, dataset="cityscapes"):
    """A run of the user's on real data, with the checkpoint it wrote."""
    uid = "c" * 32
    rid = store.start_run(variant="hrnetv2_w48_sgd", arch="hrnetv2_w48", backbone="hrnet_w48", profile="full",
                          hyperparameters={}, dataset=dataset, data_root="/data/cityscapes", train_images=2975,
                          val_images=500, device="cpu", code_version="x", uid=uid)
    path = weights / "hrnetv2_w48_sgd" / "best.pt"
    path.parent.mkdir(parents=True)
    checkpoints.save(path, {"w": torch.zeros(2)}, arch="hrnetv2_w48", recipe={}, run_uid=uid, epoch=0, iteration=1,
                     metrics={}, store=store, run_id=rid)
    return path


def _kept_predictions(store, folder, dataset):
    """An evaluation on `dataset` that kept its predictions in `folder`."""
    from engine.metrics import Metrics

    folder.mkdir(parents=True)
    (folder / "x.png").write_bytes(b"png")
    store.record_evaluation(run_id=None, variant="v", checkpoint="c.pt", checkpoint_sha256=None, dataset=dataset,
                            split="val", eval_size="64x32", metrics=Metrics(0.1, 0.5, {"road": 0.1}, num_images=1),
                            predictions_dir=str(folder))
    return folder


def test_clean_removes_the_demos_files_and_keeps_the_users(trained, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(settings, "DATA_DIR", tmp_path / "data")
    monkeypatch.setattr(settings, "SYNTHETIC_ROOT", tmp_path / "data" / "synthetic")
    made = [tmp_path / "data" / d / "x" for d in ("synthetic", "synthetic-acdc", "synthetic-kitti", "corruption-cache")]
    for folder in made:
        folder.mkdir(parents=True)
    (tmp_path / "data" / "mine").mkdir()
    db, weights = _copy(trained, tmp_path)
    with Store(db) as store:
        mine = _user_run(store, weights)
        demo_kept, my_kept = (_kept_predictions(store, tmp_path / "data" / "predictions" / d, dataset)
                              for d, dataset in (("demo", "synthetic"), ("mine", "cityscapes")))
    stray = weights / "downloaded" / "best.pt"  # a checkpoint from elsewhere, unknown to the store
    stray.parent.mkdir()
    stray.write_bytes(b"weights")
    demo_dir = weights / trained.variant

    assert main(["clean", "--dry-run", "--db", db, "--weights-dir", str(weights)]) == 0
    out = capsys.readouterr().out
    assert f"would remove {demo_dir / 'best.pt'}" in out and (demo_dir / "best.pt").is_file()

    assert main(["clean", "--db", db, "--weights-dir", str(weights)]) == 0
    out = capsys.readouterr().out
    assert not demo_dir.exists() and not any(f.parent.exists() for f in made)   # the demo's: gone
    assert (tmp_path / "data" / "mine").is_dir()
    assert not demo_kept.exists() and my_kept.is_dir()   # kept predictions: of the synthetic scenes gone, of real data kept
    assert f"keeping {my_kept}: predictions kept by an evaluation on cityscapes" in out
    assert mine.is_file() and stray.is_file() and (tmp_path / "results.db").is_file()  # the user's: kept, and said
    assert f"keeping {mine}: trained on cityscapes" in out
    assert f"keeping {stray}: not a checkpoint the results store knows" in out
    assert f"keeping {tmp_path / 'results.db'}: holds runs on cityscapes" in out


def test_clean_removes_a_store_of_demo_runs_only_and_never_a_changed_checkpoint(trained, tmp_path, monkeypatch,
                                                                                capsys):
    monkeypatch.setattr(settings, "DATA_DIR", tmp_path / "nothing")
    monkeypatch.setattr(settings, "SYNTHETIC_ROOT", tmp_path / "nothing" / "synthetic")
    db, weights = _copy(trained, tmp_path)
    last = weights / trained.variant / "last.pt"
    last.write_bytes(last.read_bytes() + b"\0")  # e.g. overwritten by a later, real training run
    assert main(["clean", "--db", db, "--weights-dir", str(weights)]) == 0
    out = capsys.readouterr().out
    assert not (weights / trained.variant / "best.pt").exists() and last.is_file()
    assert f"keeping {last}: changed since the demo wrote it" in out
    assert not (tmp_path / "results.db").exists()  # every run in it was the demo's
    assert main(["clean", "--db", db, "--weights-dir", str(weights)]) == 0
    assert "nothing the demo made is left" in capsys.readouterr().out
