"""torchrun: 2 CPU processes (gloo) train the tiny synthetic set as one run, and distributed
evaluation equals single-process evaluation exactly; the sharding and batch plan underneath."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from engine import checkpoints
from engine.data.synthetic import write_synthetic_dataset
from engine.distributed import plan_batch
from engine.evaluate import evaluate_checkpoint, read_label_png
from engine.store import Store
from engine.train import EpochSeededBatches
from tests.conftest import tiny_recipe

REPO = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(*args: str, timeout: int = 240) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), "-m", "engine", *args]
    env = {**os.environ, "SEGBENCH_OFFLINE": "1", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def test_two_processes_train_one_run_and_evaluate_exactly_as_one(synth_root, tmp_path, monkeypatch):
    recipe = tiny_recipe("unet_ce_dice", iters=4, epochs=2)  # batch 2 in all: 1 image per process, 2 steps/epoch
    recipe_file = tmp_path / "tiny.yaml"
    recipe_file.write_text(yaml.safe_dump(recipe.to_dict()))
    db, weights = f"sqlite:///{tmp_path / 'r.db'}", tmp_path / "w"
    common = ["--device", "cpu", "--db", db, "--weights-dir", str(weights), "--data-root", str(synth_root)]

    p = _torchrun("train", "--variant", str(recipe_file), *common, "--quiet")
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.count("effective total batch 2 = world 2 x micro 1 x accumulation 1") == 1, p.stdout  # rank 0
    assert p.stdout.count("unet_ce_dice: 2 epoch(s), 4 iterations") == 1, p.stdout

    store = Store(db)
    [run] = store.runs()  # one run, written by rank 0 alone
    assert run["status"] == "completed"
    assert [(e["epoch"], e["iteration"]) for e in store.epochs(run["id"])] == [(1, 2), (2, 4)]
    best = weights / "unet_ce_dice" / "best.pt"
    ckpt = checkpoints.load(best, store=store)  # its sha256 as recorded
    assert ckpt["run_uid"] == run["uid"]
    checkpoints.build_from(ckpt)
    store.close()

    kept = tmp_path / "predictions"
    monkeypatch.setenv("SEGBENCH_PREDICTIONS_DIR", str(kept))  # for both ranks, and the single process below
    three = tmp_path / "three"  # 3 val images: rank 0 scores images 0 and 2, rank 1 image 1
    write_synthetic_dataset(three, train=1, val=3, size=(128, 64), seed=3)
    p = _torchrun("evaluate", "--checkpoint", str(best), *common[:-1], str(three), "--json", "--keep-predictions")
    assert p.returncode == 0, p.stdout + p.stderr
    [line] = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]  # rank 0 alone prints
    dist = json.loads(line)
    # every rank wrote its images' predictions into the one folder rank 0 named, which the row points to
    [folder] = (kept / "unet_ce_dice").iterdir()
    assert dist["predictions_dir"] == str(folder)
    store = Store(db)
    single = evaluate_checkpoint(checkpoint=best, data_root=three, device="cpu", progress=False, store=store,
                                 keep_predictions=True)
    assert dist["num_images"] == single["num_images"] == 3
    for key in ("miou", "pixel_accuracy", "per_class_iou", "confusion", "boundary_confusion"):
        assert dist[key] == single[key], key  # bit for bit: integer confusion counts, summed
    assert dist["mean_loss"] == pytest.approx(single["mean_loss"], rel=1e-6)
    names = sorted(f.name for f in folder.iterdir())
    assert len(names) == 3 and names == sorted(f.name for f in Path(single["predictions_dir"]).iterdir())
    for name in names:
        assert (read_label_png(folder / name) == read_label_png(Path(single["predictions_dir"]) / name)).all()

    # rank 0 recorded every image's row (gathered from both ranks, put in split order), as one process does
    ev_dist, ev_single = store.evaluation(dist["evaluation_id"]), store.evaluation(single["evaluation_id"])
    assert ev_dist["images"] == ev_single["images"] == 3 and ev_dist["predictions_dir"] == str(folder)
    assert ev_dist["boundary_confusion"] == ev_single["boundary_confusion"] is not None

    def rows(evaluation_id):
        return [{k: v for k, v in r.items() if k not in ("id", "evaluation_id")}
                for r in store.image_results(evaluation_id)]

    assert [r["position"] for r in rows(dist["evaluation_id"])] == [0, 1, 2]  # gathered [0, 2] + [1], re-sorted
    assert rows(dist["evaluation_id"]) == rows(single["evaluation_id"])
    store.close()


@pytest.mark.parametrize("total,world,micro_max,expected", [
    (8, 1, None, (8, 1, 8)), (8, 2, None, (4, 1, 8)), (8, 2, 2, (2, 2, 8)), (8, 2, 3, (2, 2, 8)),
    (16, 4, 1, (1, 4, 16)), (6, 4, None, (1, 1, 4)), (2, 4, None, (1, 1, 4))])
def test_the_batch_plan_keeps_the_recipes_total_batch(total, world, micro_max, expected):
    micro, accum, effective, note = plan_batch(total, world, micro_max)
    assert (micro, accum, effective) == expected and world * micro * accum == effective
    assert bool(note) == (effective != total)


def test_ranks_take_disjoint_shards_of_the_single_process_batches():
    """Every rank draws the same permutation; together, step by step, they load exactly the
    single-process batches (micro-batches included), and `skip` counts global steps."""
    def passes(**kw):
        s = EpochSeededBatches(12, 4, torch.Generator().manual_seed(3), **kw)
        s.skip = 1
        return list(s), len(s)

    single, n = passes()
    assert n == 3 and len(single) == 2
    shards = [passes(rank=r, world=2, accum=2) for r in range(2)]
    assert all(length == 6 for _, length in shards)
    for step, batch in enumerate(single):
        mine = [shards[r][0][2 * step:2 * step + 2] for r in range(2)]
        assert all(len(m) == 1 for micro in mine for m in micro)
        got = sorted(i for micro in mine for m in micro for i in m)
        assert got == sorted(batch)
