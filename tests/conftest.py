"""Shared fixtures: a tiny synthetic dataset in the official layout, and a real tiny checkpoint
trained by the engine into a real SQLite store. Everything small: the suite runs on 2 CPU cores."""
from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest

# Tests never reach out for pretrained weights.
os.environ.setdefault("SEGBENCH_OFFLINE", "1")
# Evaluations profile FLOPs and latency at the tiny test images' size, not at the product's default 1024x512
# (seconds per forward of a full-width model on 2 cores): tests/test_recommend.py profiles at the default.
os.environ.setdefault("SEGBENCH_DEPLOY_SIZES", "64x32")

from engine.config import load_recipe  # noqa: E402
from engine.data.synthetic import write_synthetic_dataset  # noqa: E402
from tests.postgres import pg_database, pg_url, store_url  # noqa: E402,F401  (PostgreSQL fixtures)


def tiny_recipe(name: str, *, iters: int = 2, epochs: int = 1, size=(64, 32)):
    """The variant's own recipe (quick profile) shrunk to a few iterations on tiny images."""
    r = load_recipe(name, "quick")
    r.data.size = list(size)
    r.data.batch_size = 2
    r.data.workers = 0
    r.schedule.epochs = epochs
    r.schedule.max_iters = iters
    r.schedule.latency_repeats = 1
    return r


@pytest.fixture(autouse=True)
def keep_main_module():
    """Streamlit's AppTest leaves `sys.modules["__main__"]` set to the app script it ran. Every process a
    later test starts with multiprocessing's spawn would then run dashboard/app.py on start-up (streamlit,
    torch, the store: seconds per process, on 2 cores); the module is put back after each test."""
    import sys

    main = sys.modules.get("__main__")
    yield
    if main is not None:
        sys.modules["__main__"] = main


@pytest.fixture(scope="module")
def one_thread():
    """Tiny CPU forwards: one intra-op thread is fastest and immune to oversubscribed runners (a module
    asks for it with `pytestmark = pytest.mark.usefixtures("one_thread")`)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    write_synthetic_dataset(root, train=4, val=2, size=(128, 64), seed=0)
    return root


@pytest.fixture(scope="session")
def trained(tmp_path_factory, synth_root):
    """DeepLabV3-R50 (the fastest learner here) trained for a dozen iterations by the engine:
    a real checkpoint and real store rows."""
    from engine.store import Store
    from engine.train import train

    tmp = tmp_path_factory.mktemp("trained")
    db, weights = f"sqlite:///{tmp / 'results.db'}", tmp / "weights"
    recipe = tiny_recipe("deeplabv3_r50_adam", iters=12, epochs=6, size=(64, 32))
    result = train(recipe, store=Store(db), data_root=synth_root, device="cpu", weights_dir=weights, progress=False)
    return SimpleNamespace(db=db, weights=weights, variant=recipe.name, result=result, recipe=recipe)


@pytest.fixture(scope="session")
def dashboard_data(tmp_path_factory, trained, synth_root):
    """What the dashboard reads after a small real session: a copy of `trained`'s store with two
    trained and evaluated variants (DeepLabV3-R50, its predictions kept, and a tiny UNet) and one failed run, and a
    weights folder holding both checkpoints. Yields the env the app reads (RESULTS_DB, WEIGHTS_DIR)."""
    import sqlite3

    from engine.evaluate import evaluate_checkpoint
    from engine.store import Store
    from engine.train import train

    tmp = tmp_path_factory.mktemp("dashboard")
    with sqlite3.connect(trained.db.removeprefix("sqlite:///")) as src, sqlite3.connect(tmp / "results.db") as dst:
        src.backup(dst)  # WAL mode: a plain file copy could miss the latest writes
    db, weights = f"sqlite:///{tmp / 'results.db'}", tmp / "weights"
    weights.mkdir()
    (weights / trained.variant).symlink_to(trained.weights / trained.variant, target_is_directory=True)
    store = Store(db)
    unet = tiny_recipe("unet_ce_dice", iters=2, epochs=2, size=(64, 32))
    train(unet, store=store, data_root=synth_root, device="cpu", weights_dir=weights, progress=False)
    kept = tmp / "predictions"  # the first variant keeps its predictions, the second's are recomputed on demand
    previous, os.environ["SEGBENCH_PREDICTIONS_DIR"] = os.environ.get("SEGBENCH_PREDICTIONS_DIR"), str(kept)
    try:
        results = {variant: evaluate_checkpoint(variant=variant, data_root=synth_root, device="cpu", store=store,
                                                weights_dir=weights, progress=False, keep_predictions=keep)
                   for variant, keep in ((trained.variant, True), (unet.name, False))}
    finally:
        if previous is None:
            del os.environ["SEGBENCH_PREDICTIONS_DIR"]
        else:
            os.environ["SEGBENCH_PREDICTIONS_DIR"] = previous
    failed = store.start_run(variant="hrnetv2_w48_sgd", arch="hrnetv2_w48", backbone="hrnet_w48", profile="quick",
                             hyperparameters={}, dataset="synthetic", data_root=str(synth_root), train_images=4,
                             val_images=2, device="cpu", code_version="test")
    store.finish_run(failed, status="failed", error="TrainingDiverged: loss is nan at iteration 3")
    from engine.bench import bench_video, record
    from engine.inference import InferenceOptions

    for variant in (trained.variant, unet.name):  # a real (tiny) `python -m engine bench` row each
        record(store, bench_video(variant, size=(64, 32), frames=2, options=InferenceOptions(batch_size=2),
                                  device="cpu", weights_dir=weights, repeats=1))
    sweeps, shifts = robustness_rows(store, synth_root, weights, (trained.variant, unet.name))
    store.close()
    return SimpleNamespace(db=db, weights=weights, variants=(trained.variant, unet.name), results=results,
                           sweeps=sweeps, shifts=shifts,
                           env={"RESULTS_DB": db, "WEIGHTS_DIR": str(weights), "SEGBENCH_OFFLINE": "1"})


SWEPT = ("gaussian_noise", "fog")  # two groups (noise, weather); both fast (glass_blur would JIT-compile for 5 s)
SHIFTS = ("fog", "night")  # synthetic-ACDC conditions each checkpoint is evaluated on


def robustness_rows(store, data_root, weights, variants):
    """What `python -m engine robustness` records (a real sweep of each variant: SWEPT at severities
    1 and 3 on the first val image, `--limit 1`), and what `evaluate --dataset acdc` records on two
    conditions of a tiny synthetic ACDC copy. Returns ({variant: robustness id}, {(variant, condition): miou})."""
    from engine import robustness
    from engine.data.cityscapes import CityscapesDataset
    from engine.data.synthetic_layouts import write_layout
    from engine.data.transforms import EvalTransform
    from engine.evaluate import evaluate_checkpoint, load_checkpoint

    acdc = Path(data_root).parent / "synthetic-acdc"
    if not (acdc / "README.txt").is_file():
        write_layout("acdc", acdc, train=1, val=1, size=(128, 64), seed=0)
    sweeps, shifts = {}, {}
    for variant in variants:
        m = load_checkpoint(variant=variant, weights_dir=weights, store=store, device="cpu")
        data = CityscapesDataset(data_root, "val", EvalTransform(m.size))
        sweep = robustness.run_sweep(m.model, data, m.device, corruptions=list(SWEPT), severities=(1, 3), limit=1,
                                     workers=0, progress=False)
        run_id = store.run_by_uid(m.run_uid)["id"]
        sweeps[variant] = robustness.record(store, sweep, run_id=run_id, variant=variant, checkpoint=str(m.path),
                                            checkpoint_sha256=m.sha256, dataset=data.name, condition="", split="val",
                                            eval_size=m.eval_size)
        for condition in SHIFTS:
            shifts[(variant, condition)] = evaluate_checkpoint(
                variant=variant, weights_dir=weights, dataset="acdc", data_root=acdc, condition=condition,
                device="cpu", store=store, progress=False)["miou"]
    return sweeps, shifts
