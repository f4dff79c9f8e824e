"""End to end on the synthetic scenes: every variant trains, evaluates, profiles and lands in the store;
our metrics equal the official cityscapesscripts evaluator's; training resumes exactly."""
from __future__ import annotations

import glob
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engine import classes
from engine.config import list_variants
from engine.data.cityscapes import DatasetError
from engine.evaluate import evaluate_checkpoint, most_frequent_class_miou
from engine.store import Store
from engine.train import train
from tests.conftest import tiny_recipe

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("variant", list_variants())
def test_every_variant_trains_evaluates_profiles_and_is_recorded(variant, synth_root, tmp_path):
    store, weights = Store(f"sqlite:///{tmp_path / 'r.db'}"), tmp_path / "w"
    res = train(tiny_recipe(variant, iters=1), store=store, data_root=synth_root, device="cpu",
                weights_dir=weights, progress=False)
    run = store.run(res.run_id)
    assert run["status"] == "completed" and run["variant"] == variant and run["dataset"] == "synthetic"
    assert run["train_images"] == 4 and run["val_images"] == 2 and run["train_seconds"] > 0
    assert [e["epoch"] for e in store.epochs(res.run_id)] == [1]
    ckpt = torch.load(res.best_checkpoint, weights_only=True)  # plain data, no code
    assert ckpt["arch"] == run["arch"] and ckpt["recipe"]["name"] == variant and ckpt["run_uid"] == run["uid"]
    assert ckpt["classes"]["names"] == classes.CLASS_NAMES and "optimizer" not in ckpt
    assert "optimizer" in torch.load(res.last_checkpoint, weights_only=True)

    out = evaluate_checkpoint(variant=variant, data_root=synth_root, device="cpu", store=store,
                              weights_dir=weights, progress=False)
    assert 0 <= out["miou"] <= 1 and set(out["per_class_iou"]) == set(classes.CLASS_NAMES)
    assert out["params"] > 1e6 and out["gflops"] > 0 and out["latency_ms"] > 0
    assert out["size_mb"] == pytest.approx(res.best_checkpoint.stat().st_size / 1e6)
    [row] = store.leaderboard()
    assert row["miou"] == pytest.approx(out["miou"]) and row["gflops"] == pytest.approx(out["gflops"])
    assert row["latency_device"] and row["params"] == out["params"]


def _official_scores(root: Path, pred_dir: Path) -> dict:
    from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as official

    args = official.args
    args.cityscapesPath, args.predictionPath, args.predictionWalk = str(root), str(pred_dir), None
    args.quiet, args.JSONOutput, args.colorized = True, False, False
    gts = sorted(glob.glob(str(root / "gtFine" / "val" / "*" / "*_gtFine_labelIds.png")))
    preds = [official.getPrediction(args, gt) for gt in gts]
    return official.evaluateImgLists(preds, gts, args)


def test_metrics_equal_the_official_evaluator(trained, synth_root, tmp_path):
    pred_dir = tmp_path / "preds"
    ours = evaluate_checkpoint(variant=trained.variant, data_root=synth_root, device="cpu", weights_dir=trained.weights,
                               save_predictions=pred_dir, progress=False)
    files = sorted(pred_dir.iterdir())
    assert [f.name for f in files] == sorted(Path(p).name.replace("_leftImg8bit.png", "_pred_labelIds.png")
                                             for p in glob.glob(str(synth_root / "leftImg8bit/val/*/*.png")))
    pred = np.asarray(Image.open(files[0]))
    assert pred.ndim == 2 and pred.shape == (64, 128)  # full label resolution, single channel
    assert set(np.unique(pred)) <= {int(i) for i in classes.TRAIN_ID_TO_LABEL_ID[:19]}  # label ids, not trainIds
    official = _official_scores(synth_root, pred_dir)
    predicted = set().union(*(np.unique(np.asarray(Image.open(f))).tolist() for f in files))
    assert len(predicted) >= 3  # a non-trivial comparison: several classes predicted
    for name, iou in ours["per_class_iou"].items():
        theirs = official["classScores"][name]
        assert (np.isnan(theirs) if iou is None else abs(iou - theirs) < 1e-6), name
    assert abs(ours["miou"] - official["averageScoreClasses"]) < 1e-6


def test_trained_model_beats_the_most_frequent_class(trained, synth_root):
    out = evaluate_checkpoint(variant=trained.variant, data_root=synth_root, device="cpu",
                              weights_dir=trained.weights, progress=False)
    assert out["miou"] > most_frequent_class_miou(synth_root, "val")


@pytest.mark.parametrize("workers", [0, 2])  # 2: persistent, prefetching workers (augmentation seeded per sample)
def test_resume_continues_the_same_run_and_equals_an_uninterrupted_one(synth_root, tmp_path, workers):
    def run(weights, epochs, resume=False, store=None):
        r = tiny_recipe("unet_ce_dice", iters=100, epochs=epochs)
        r.schedule.scheduler.name, r.schedule.scheduler.step_size = "step", 1  # the lr must continue, not restart
        r.data.workers = workers
        if workers:  # random augmentation in the workers: resuming must reproduce it too
            r.data.augment.scale, r.data.augment.crop, r.data.augment.photometric = [0.5, 1.5], [64, 32], True
        return train(r, store=store, data_root=synth_root, device="cpu", weights_dir=weights, resume=resume,
                     progress=False)

    straight_store = Store(f"sqlite:///{tmp_path / 'a.db'}")
    straight = run(tmp_path / "a", 2, store=straight_store)
    store = Store(f"sqlite:///{tmp_path / 'b.db'}")
    first = run(tmp_path / "b", 1, store=store)
    resumed = run(tmp_path / "b", 2, resume=True, store=store)
    assert resumed.run_id == first.run_id and len(store.runs()) == 1
    assert [e["epoch"] for e in store.epochs(first.run_id)] == [1, 2]
    lrs = [e["lr"] for e in store.epochs(first.run_id)]
    assert lrs == [e["lr"] for e in straight_store.epochs(straight.run_id)] and lrs[1] < lrs[0]
    a = torch.load(straight.last_checkpoint, weights_only=True)["model"]
    b = torch.load(resumed.last_checkpoint, weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert store.run(first.run_id)["status"] == "completed"


def test_cached_training_equals_uncached_training(synth_root, tmp_path):
    """The in-memory cache changes where the pixels come from, never what is computed."""
    weights = []
    for cache in (False, True):
        r = tiny_recipe("unet_ce_dice", iters=4, epochs=2)
        r.data.augment.scale, r.data.augment.crop, r.data.augment.photometric = [0.5, 1.5], [64, 32], True
        r.data.cache = cache
        res = train(r, store=Store(f"sqlite:///{tmp_path / f'{cache}.db'}"), data_root=synth_root, device="cpu",
                    weights_dir=tmp_path / str(cache), progress=False)
        weights.append(torch.load(res.last_checkpoint, weights_only=True)["model"])
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


class _NanAfter:
    """SegmentationLoss whose loss turns NaN from the `after`-th call on (a diverging run)."""

    def __init__(self, after):
        self.after, self.calls = after, 0

    def wrap(self, cfg, aux_weight=0.4):
        from engine.losses import SegmentationLoss

        real, outer = SegmentationLoss(cfg, aux_weight), self

        class Loss:
            single = real.single

            def __call__(self, outputs, target):
                outer.calls += 1
                loss = real(outputs, target)
                return loss * float("nan") if outer.calls > outer.after else loss
        return Loss()


@pytest.mark.parametrize("read_every,iters,after,caught_by", [
    (10, 3, 1, 3),   # NaN from step 2, max_iters ends the epoch at 3: caught by the epoch's check
    (3, 30, 1, 3),   # NaN from step 2 of a 4-step epoch: caught by the periodic read at step 3
    (10, 30, 0, 1),  # NaN from step 1: caught by the read after the first step
])
def test_divergence_is_caught_and_recorded(synth_root, tmp_path, monkeypatch, read_every, iters, after, caught_by):
    """A NaN loss stops the run, at the epoch's end or at the first periodic loss read after it
    (every LOSS_READ_EVERY steps; on the CPU that read is the current value); no checkpoint is written."""
    import engine.train as train_mod
    from engine.train import TrainingDiverged

    nan = _NanAfter(after)
    monkeypatch.setattr(train_mod, "SegmentationLoss", nan.wrap)
    monkeypatch.setattr(train_mod, "LOSS_READ_EVERY", read_every)
    r = tiny_recipe("unet_ce_dice", iters=iters, epochs=1)
    r.data.batch_size = 1  # 4 train images: 4 steps per epoch
    r.schedule.epochs = 100
    store = Store(f"sqlite:///{tmp_path / 'r.db'}")
    with pytest.raises(TrainingDiverged, match=f"training loss became nan in epoch .* \\(by iteration {caught_by}\\)"):
        train(r, store=store, data_root=synth_root, device="cpu", weights_dir=tmp_path / "w", progress=False)
    assert nan.calls == caught_by
    [run] = store.runs()
    assert run["status"] == "failed" and "TrainingDiverged" in run["error"]
    assert not (tmp_path / "w").exists() or not any((tmp_path / "w").rglob("*.pt"))


def test_a_crash_during_training_is_recorded_as_failed(synth_root, tmp_path):
    import shutil

    root = tmp_path / "data"
    shutil.copytree(synth_root, root)
    victim = sorted((root / "leftImg8bit" / "train").rglob("*.png"))[1]
    store = Store(f"sqlite:///{tmp_path / 'r.db'}")
    recipe = tiny_recipe("unet_ce_dice", iters=10)
    recipe.data.batch_size = 1
    victim.write_bytes(victim.read_bytes()[:100])  # header intact: the pre-check passes, decoding fails mid-epoch
    with pytest.raises(DatasetError, match=victim.name):
        train(recipe, store=store, data_root=root, device="cpu", weights_dir=tmp_path / "w", progress=False)
    [row] = store.leaderboard()
    assert row["status"] == "failed" and victim.name in row["error"] and row["miou"] is None


def _cli(capsys, *args):
    """The real CLI, in-process (each `python -m engine` process pays torch's import)."""
    from engine.cli import main

    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_evaluate_json_and_runs_json(trained, synth_root, capsys):
    common = ["--db", trained.db, "--weights-dir", str(trained.weights), "--data-root", str(synth_root), "--device", "cpu"]
    code, stdout, err = _cli(capsys, "evaluate", "--variant", trained.variant, "--json", *common)
    assert code == 0, err
    out = json.loads(stdout)
    for key in ("variant", "mIoU", "pixel_accuracy", "per_class_iou", "params", "size_mb", "gflops", "latency_ms", "device"):
        assert key in out
    assert out["variant"] == trained.variant and len(out["per_class_iou"]) == 19
    code, stdout, err = _cli(capsys, "runs", "--json", "--db", trained.db)
    assert code == 0, err
    rows = json.loads(stdout)
    assert rows[0]["variant"] == trained.variant and rows[0]["dataset"] == "synthetic"
    assert rows[0]["status"] == "completed" and rows[0]["mIoU"] == pytest.approx(out["mIoU"])
    code, stdout, _ = _cli(capsys, "runs", "--db", trained.db)
    assert "synthetic" in stdout and "not Cityscapes" in stdout
    code, stdout, _ = _cli(capsys, "evaluate", "--variant", trained.variant, *common)
    assert code == 0 and "mIoU" in stdout and "GFLOPs" in stdout and "road" in stdout


def test_cli_user_errors_are_one_line_not_tracebacks(tmp_path, capsys):
    db = ["--db", f"sqlite:///{tmp_path / 'x.db'}"]
    code, _, err = _cli(capsys, "train", "--variant", "nope", *db)
    assert code == 2 and "known variants" in err
    code, _, err = _cli(capsys, "evaluate", "--variant", "unet_ce_dice", "--weights-dir", str(tmp_path),
                        "--data-root", str(tmp_path), *db)
    assert code == 2 and "train it with" in err
    code, _, err = _cli(capsys, "train", "--variant", "unet_ce_dice", "--data-root", str(tmp_path / "none"), *db)
    assert code == 2 and "does not exist" in err
    # and as a real process: one line on stderr, no traceback
    p = subprocess.run([sys.executable, "-m", "engine", "evaluate", "--checkpoint", str(tmp_path / "missing.pt"),
                        "--data-root", str(tmp_path), *db],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    assert p.returncode == 2 and p.stderr.startswith("error: no checkpoint at") and "Traceback" not in p.stderr


def test_with_nothing_downloaded_train_uses_the_built_in_synthetic_scenes(tmp_path, capsys, monkeypatch):
    from engine import settings

    monkeypatch.delenv("CITYSCAPES_DATASET", raising=False)
    monkeypatch.setattr(settings, "SYNTHETIC_ROOT", tmp_path / "synthetic")
    db = f"sqlite:///{tmp_path / 'r.db'}"
    code, out, err = _cli(capsys, "train", "--variant", "unet_ce_dice", "--profile", "quick", "--epochs", "1",
                          "--max-iters", "1", "--quiet", "--device", "cpu", "--db", db, "--weights-dir", str(tmp_path / "w"))
    assert code == 0, err
    assert "writing the built-in synthetic street scenes" in out
    [run] = Store(db).runs()
    assert run["dataset"] == "synthetic" and run["data_root"] == str(tmp_path / "synthetic") and run["train_images"] == 16


def test_cli_synth_and_variants(tmp_path, capsys):
    code, _, err = _cli(capsys, "synth", "--out", str(tmp_path / "s"), "--train", "2", "--val", "2", "--size", "128x64",
                        "--seed", "3")
    assert code == 0, err
    assert len(list((tmp_path / "s" / "leftImg8bit" / "train").rglob("*_leftImg8bit.png"))) == 2
    p = subprocess.run([sys.executable, "-m", "engine", "variants"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0 and all(v in p.stdout for v in list_variants())


def test_segmenter_labels_images_of_any_size_at_their_own_resolution(trained, synth_root):
    from engine.data.cityscapes import read_image
    from engine.inference import Segmenter

    seg = Segmenter(trained.weights / trained.variant / "best.pt")
    image = read_image(sorted((synth_root / "leftImg8bit" / "val").rglob("*.png"))[0])
    for h, w in [(64, 128), (97, 203), (300, 120)]:
        import cv2

        pred = seg.predict(cv2.resize(image, (w, h)))
        assert pred.shape == (h, w) and pred.dtype == np.uint8 and pred.max() < classes.NUM_CLASSES
    # the same path evaluation uses: on a val image it reproduces the saved official prediction
    assert len(np.unique(seg.predict(image))) >= 2
