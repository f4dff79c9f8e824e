"""Training survives being stopped anywhere: a crash, SIGKILL or Ctrl-C, mid-epoch included, then
--resume ends with the weights and epoch rows of an uninterrupted run, in the same store run (CPU:
deterministic). A non-finite loss is never checkpointed."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

import engine.train as train_mod
from engine.store import Store
from engine.train import TrainingDiverged, train
from tests.conftest import tiny_recipe

REPO = Path(__file__).resolve().parent.parent
ROW = ("epoch", "iteration", "train_loss", "val_loss", "val_miou", "val_pixel_accuracy", "lr")


def _recipe(workers: int = 0, every_iters: int | None = None):
    """2 epochs of 4 steps (batch 1, 4 synthetic train images) with random augmentation, dropout and
    an lr that steps down after epoch 1: everything a resume has to reproduce."""
    r = tiny_recipe("unet_ce_dice", iters=100, epochs=2)
    r.data.batch_size, r.data.workers = 1, workers
    r.data.augment.scale, r.data.augment.crop, r.data.augment.photometric = [0.5, 1.5], [64, 32], True
    r.model.dropout = 0.1
    r.schedule.scheduler.name, r.schedule.scheduler.step_size = "step", 1
    r.schedule.checkpoint_every_iters = every_iters
    return r


def _train(recipe, tmp: Path, data_root, resume: bool = False):
    return train(recipe, store=Store(f"sqlite:///{tmp / 'r.db'}"), data_root=data_root, device="cpu",
                 weights_dir=tmp / "w", resume=resume, progress=False)


def _last(tmp: Path) -> dict:
    return torch.load(tmp / "w" / "unet_ce_dice" / "last.pt", weights_only=True, mmap=True)


def _outcome(tmp: Path) -> dict:
    """The one run of tmp's store: its status, epoch rows and final weights (last.pt, best.pt)."""
    store = Store(f"sqlite:///{tmp / 'r.db'}")
    [run] = store.runs()
    return {"run": run, "rows": [{k: e[k] for k in ROW} for e in store.epochs(run["id"])],
            "last": _last(tmp)["model"],
            "best": torch.load(tmp / "w" / "unet_ce_dice" / "best.pt", weights_only=True, mmap=True)["model"]}


def _assert_same(outcome: dict, straight: dict) -> None:
    assert outcome["run"]["status"] == "completed"
    assert outcome["rows"] == straight["rows"]  # train loss, val mIoU, lr...: bit for bit
    for name in ("last", "best"):
        a, b = outcome[name], straight[name]
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name


@pytest.fixture(scope="module")
def straight(tmp_path_factory, synth_root):
    """The uninterrupted run everything is compared with (workers=0, no iteration checkpoints)."""
    tmp = tmp_path_factory.mktemp("straight")
    _train(_recipe(), tmp, synth_root)
    out = _outcome(tmp)
    assert [r["epoch"] for r in out["rows"]] == [1, 2] and out["rows"][1]["lr"] < out["rows"][0]["lr"]
    return out


@pytest.mark.parametrize("workers,crash_at", [(0, 5), (2, 7)])  # last.pt at epoch 1 step 3 / epoch 2 step 2
def test_a_crash_resumes_exactly_from_the_last_iteration_checkpoint(synth_root, tmp_path, monkeypatch, straight,
                                                                   workers, crash_at):
    """checkpoint_every_iters=3 writes last.pt mid-epoch; resuming skips the steps done (unloaded),
    keeps the epoch's loss sum, and reproduces augmentation (whichever worker loads a sample) and
    dropout: the same weights and epoch rows as the uninterrupted workers=0 run."""
    real, calls = train_mod.train_step, []

    def crashing(*args):
        calls.append(1)
        if len(calls) == crash_at:
            raise RuntimeError("power cut")
        return real(*args)

    with monkeypatch.context() as m:
        m.setattr(train_mod, "train_step", crashing)
        with pytest.raises(RuntimeError, match="power cut"):
            _train(_recipe(workers, every_iters=3), tmp_path, synth_root)
    ckpt = _last(tmp_path)
    done = (crash_at - 1) // 3 * 3
    assert ckpt["iteration"] == done and ckpt["in_epoch"]["steps"] == done % 4 and ckpt["epoch"] == done // 4 - 1
    store = Store(f"sqlite:///{tmp_path / 'r.db'}")
    [run] = store.runs()
    assert run["status"] == "failed" and "power cut" in run["error"]

    res = _train(_recipe(workers, every_iters=3), tmp_path, synth_root, resume=True)
    out = _outcome(tmp_path)
    assert out["run"]["id"] == run["id"] == res.run_id and res.iterations == 8 and res.epochs == 2
    _assert_same(out, straight)


@pytest.fixture
def interactive_sigint():
    """SIGINT as a terminal gives it to Python (KeyboardInterrupt), however this test process was
    started: a runner launched in the background of a shell inherits SIGINT ignored."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


@pytest.mark.parametrize("where", ["step", "validation"])
def test_ctrl_c_saves_an_exact_checkpoint(synth_root, tmp_path, monkeypatch, straight, where, interactive_sigint):
    """SIGINT inside step 6 (epoch 2, step 2) takes effect once that step is counted: last.pt holds
    iteration 6. SIGINT during epoch 1's validation acts at once: last.pt holds epoch 1's 4 steps, and
    the resume validates again without disturbing the RNG. Either way the run is marked interrupted
    and --resume then equals the uninterrupted run."""
    import engine.evaluate

    calls, sigint = [], lambda: os.kill(os.getpid(), signal.SIGINT)

    def after(real):  # `real`, then SIGINT on its first call (validation) or its 6th (step)
        def wrapped(*args, **kwargs):
            out = real(*args, **kwargs)
            calls.append(1)
            if len(calls) == (6 if where == "step" else 1):  # a step: weights updated, not yet counted
                sigint()
            return out
        return wrapped

    with monkeypatch.context() as m:
        if where == "step":
            m.setattr(train_mod, "train_step", after(train_mod.train_step))
        else:
            m.setattr(engine.evaluate, "evaluate_model", after(engine.evaluate.evaluate_model))
        with pytest.raises(KeyboardInterrupt):
            _train(_recipe(), tmp_path, synth_root)  # no iteration checkpoints: last.pt comes from Ctrl-C
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # training's handler is gone
    ckpt = _last(tmp_path)
    assert (ckpt["iteration"], ckpt["in_epoch"]["steps"]) == ((6, 2) if where == "step" else (4, 4))
    [run] = Store(f"sqlite:///{tmp_path / 'r.db'}").runs()
    assert run["status"] == "interrupted" and "--resume" in run["error"]
    _train(_recipe(), tmp_path, synth_root, resume=True)
    _assert_same(_outcome(tmp_path), straight)


def _engine_train(recipe_file: Path, tmp: Path, data_root, *flags, **popen):
    """`python -m engine train` on a recipe file, in a process of its own (SIGINT: the default)."""
    cmd = [sys.executable, "-m", "engine", "train", "--variant", str(recipe_file), "--device", "cpu",
           "--db", f"sqlite:///{tmp / 'r.db'}", "--weights-dir", str(tmp / "w"), "--data-root", str(data_root), *flags]
    return subprocess.Popen(cmd, cwd=REPO, env={**os.environ, "SEGBENCH_OFFLINE": "1"},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL), **popen)


def _recipe_file(tmp: Path) -> Path:
    path = tmp / "tiny.yaml"
    path.write_text(yaml.safe_dump(_recipe().to_dict()))
    return path


def test_sigint_to_a_training_process_saves_last_pt_and_resume_finishes_it(synth_root, tmp_path, straight, capsys):
    from engine.cli import main

    recipe_file = _recipe_file(tmp_path)
    with open(tmp_path / "stderr.txt", "w") as err:
        p = _engine_train(recipe_file, tmp_path, synth_root, stdout=subprocess.PIPE, stderr=err, text=True)
        for line in p.stdout:  # "cached ...": the last line before the first step
            if line.startswith("cached "):
                break
        time.sleep(0.5)  # somewhere in the first epoch (or, on a loaded machine, later: any point is fine)
        p.send_signal(signal.SIGINT)
        p.communicate(timeout=300)
    stderr = (tmp_path / "stderr.txt").read_text()
    assert p.returncode == 130, stderr
    reached = int(re.search(r"last\.pt saved at iteration (\d+); .* --resume", stderr).group(1))
    assert 0 <= reached < 8 and _last(tmp_path)["iteration"] == reached
    [run] = Store(f"sqlite:///{tmp_path / 'r.db'}").runs()
    assert run["status"] == "interrupted" and f"iteration {reached}" in run["error"]

    assert main(["train", "--variant", str(recipe_file), "--device", "cpu", "--db", f"sqlite:///{tmp_path / 'r.db'}",
                 "--weights-dir", str(tmp_path / "w"), "--data-root", str(synth_root), "--quiet", "--resume"]) == 0
    _assert_same(_outcome(tmp_path), straight)


def test_sigkill_after_a_checkpoint_then_resume_in_a_new_process_equals_an_uninterrupted_run(synth_root, tmp_path,
                                                                                           straight):
    """kill -9 lands anywhere after the first iteration checkpoint (mid-step, mid-validation,
    mid-save: last.pt is replaced atomically); the run stays 'running' until a resume completes it."""
    recipe_file = _recipe_file(tmp_path)
    last = tmp_path / "w" / "unet_ce_dice" / "last.pt"
    p = _engine_train(recipe_file, tmp_path, synth_root, "--quiet", "--checkpoint-every-iters", "3",
                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not last.is_file():
        assert p.poll() is None, "training ended before its first checkpoint"
        assert time.monotonic() < deadline, "no checkpoint after 300 s"
        time.sleep(0.01)
    p.kill()
    p.wait(timeout=60)
    assert p.returncode == -signal.SIGKILL
    assert _last(tmp_path)["iteration"] in (3, 6)  # what the killed process saved (8: the final one is not reached)
    [run] = Store(f"sqlite:///{tmp_path / 'r.db'}").runs()
    assert run["status"] == "running"  # nothing could record the kill

    p = _engine_train(recipe_file, tmp_path, synth_root, "--quiet", "--checkpoint-every-iters", "3", "--resume",
                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out, _ = p.communicate(timeout=300)
    assert p.returncode == 0, out
    assert "resuming unet_ce_dice at epoch" in out
    outcome = _outcome(tmp_path)  # one run in the store, not two
    assert outcome["run"]["id"] == run["id"]
    _assert_same(outcome, straight)


def test_a_non_finite_loss_stops_the_run_before_any_checkpoint_of_it(synth_root, tmp_path, monkeypatch):
    """The loss turns inf at step 2 of an epoch checkpointed every iteration: the check before each
    mid-epoch checkpoint stops the run there (the periodic loss read would only come at step 10), and
    last.pt stays the finite one of iteration 1."""
    real = train_mod.SegmentationLoss

    def inf_from_step_2(cfg, aux_weight=0.4):
        loss, calls = real(cfg, aux_weight), []

        class Loss:
            single = loss.single

            def __call__(self, outputs, target):
                calls.append(1)
                return loss(outputs, target) * (float("inf") if len(calls) >= 2 else 1.0)
        return Loss()

    monkeypatch.setattr(train_mod, "SegmentationLoss", inf_from_step_2)
    with pytest.raises(TrainingDiverged, match=r"training loss became inf in epoch 1 \(by iteration 2\)"):
        _train(_recipe(every_iters=1), tmp_path, synth_root)
    assert _last(tmp_path)["iteration"] == 1
    [run] = Store(f"sqlite:///{tmp_path / 'r.db'}").runs()
    assert run["status"] == "failed" and "by iteration 2" in run["error"]


@pytest.mark.parametrize("value", [0, -3, 1.5, "3", True])
def test_checkpoint_every_iters_is_validated_in_recipes_and_on_the_command_line(value, tmp_path, capsys):
    from engine.cli import main
    from engine.config import RecipeError, validate

    r = tiny_recipe("unet_ce_dice")
    r.schedule.checkpoint_every_iters = value
    with pytest.raises(RecipeError, match="schedule.checkpoint_every_iters must be a whole number >= 1 or null"):
        validate(r, "x.yaml")
    r.schedule.checkpoint_every_iters = 5
    validate(r, "x.yaml")
    if value == 0:
        code = main(["train", "--variant", "unet_ce_dice", "--checkpoint-every-iters", "0",
                     "--db", f"sqlite:///{tmp_path / 'r.db'}"])
        assert code == 2 and "checkpoint_every_iters must be" in capsys.readouterr().err
