"""Iteration schedules and the poly learning rate the `reference` profiles use (mmsegmentation's
PolyLR: lr(t) = eta_min + (lr0 - eta_min) (1 - t / T) ** power, stepped per iteration), and a real
tiny training on an iteration schedule validating every other epoch."""
import pytest
import torch

from engine.config import load_recipe
from engine.store import Store
from engine.train import build_scheduler, epochs_to_run, total_iters, train
from tests.conftest import tiny_recipe


def _lrs(recipe, iters_per_epoch, at):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=recipe.schedule.optimizer.lr)
    sched = build_scheduler(opt, recipe, iters_per_epoch)
    out = {}
    for it in range(max(at) + 1):
        if it in at:
            out[it] = opt.param_groups[0]["lr"]
        opt.step()
        sched.step()
    return out


def test_poly_schedule_values_at_chosen_iterations():
    r = load_recipe("deeplabv3_r50_adam", "reference")  # SGD 0.01, poly 0.9, eta_min 1e-4, 80k iterations
    assert total_iters(r, 371) == 80_000 and epochs_to_run(r, 371) == 216  # ceil(80000 / 371)
    r.schedule.max_iters = 100  # the same curve on 100 iterations
    lrs = _lrs(r, 371, {0, 1, 50, 90, 100, 120})
    expected = {0: 0.01, 1: 1e-4 + (0.01 - 1e-4) * 0.99 ** 0.9, 50: 1e-4 + (0.01 - 1e-4) * 0.5 ** 0.9,
                90: 1e-4 + (0.01 - 1e-4) * 0.1 ** 0.9, 100: 1e-4, 120: 1e-4}
    assert lrs == pytest.approx(expected, rel=1e-9)
    assert lrs[50] == pytest.approx(0.0054053, rel=1e-4)  # the number written down by hand


def test_an_epoch_schedule_decays_over_its_epochs_and_stops_at_max_iters():
    r = load_recipe("unet_ce_dice", "full")
    r.schedule.scheduler.name, r.schedule.scheduler.min_lr, r.schedule.epochs = "poly", 0.0, 4
    assert total_iters(r, 10) == 40 and epochs_to_run(r, 10) == 4
    assert _lrs(r, 10, {20})[20] == pytest.approx(1e-4 * 0.5 ** 0.9)
    r.schedule.max_iters = 25  # cut short: the decay ends where training ends
    assert total_iters(r, 10) == 25 and _lrs(r, 10, {25})[25] == 0.0


def test_an_iteration_schedule_trains_exactly_max_iters_and_validates_every_n_epochs(synth_root, tmp_path):
    r = tiny_recipe("unet_ce_dice", iters=5)  # 4 training images, batch 2: 2 iterations per epoch
    r.schedule.epochs, r.schedule.val_every = None, 2
    r.schedule.optimizer.name, r.schedule.optimizer.lr = "sgd", 0.01
    r.schedule.scheduler.name, r.schedule.scheduler.min_lr = "poly", 1e-4
    store = Store(f"sqlite:///{tmp_path / 'r.db'}")
    res = train(r, store=store, data_root=synth_root, device="cpu", weights_dir=tmp_path / "w", progress=False)
    rows = store.epochs(res.run_id)
    assert [(e["epoch"], e["iteration"]) for e in rows] == [(1, 2), (2, 4), (3, 5)]  # 3 epochs, the last cut at 5
    assert [e["val_miou"] is not None for e in rows] == [False, True, True]  # every 2nd epoch, and the last
    assert rows[-1]["lr"] == pytest.approx(1e-4)  # poly has reached eta_min at max_iters
    assert res.iterations == 5 and res.epochs == 3 and res.best_checkpoint.is_file()
    ckpt = torch.load(res.best_checkpoint, weights_only=True)
    assert ckpt["epoch"] in (1, 2) and ckpt["metrics"]["miou"] == max(e["val_miou"] for e in rows[1:])
