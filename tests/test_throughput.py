"""engine.throughput: training and data-pipeline images/second, measured without writing anything."""
import math

import pytest
import torch

from engine import settings
from engine.throughput import training_throughput
from tests.conftest import tiny_recipe

KEYS = {"variant", "size", "batch_size", "device", "threads", "precision", "backend", "channels_last", "compile",
        "train_images_per_second", "data_images_per_second", "data_faster_than_model", "torch_version"}


@pytest.mark.parametrize("cache", [True, False])
def test_training_throughput_measures_and_writes_nothing(synth_root, tmp_path, monkeypatch, cache):
    weights, db = tmp_path / "weights", tmp_path / "results.db"
    monkeypatch.setenv("WEIGHTS_DIR", str(weights))
    monkeypatch.setenv("RESULTS_DB", f"sqlite:///{db}")
    monkeypatch.setattr(settings, "REPO_ROOT", tmp_path)  # the default store and weights would land here
    recipe = tiny_recipe("unet_ce_dice", size=(64, 32))
    recipe.data.cache = cache
    recipe.data.augment.scale, recipe.data.augment.crop = [0.5, 2.0], [64, 32]
    before = repr(recipe)
    rng = torch.get_rng_state()

    out = training_throughput(recipe, data_root=synth_root, device="cpu", size=(48, 24), iters=2, warmup=1)

    assert KEYS <= set(out)
    assert out["variant"] == "unet_ce_dice" and out["size"] == "48x24" and out["batch_size"] == 2
    assert out["precision"] == "fp32" and out["channels_last"] is False and out["compile"] is False
    assert out["threads"] == torch.get_num_threads() and out["torch_version"] == torch.__version__
    assert isinstance(out["device"], str) and out["device"]
    for key in ("train_images_per_second", "data_images_per_second"):
        assert math.isfinite(out[key]) and out[key] > 0, key
    assert out["data_faster_than_model"] == (out["data_images_per_second"] > out["train_images_per_second"])
    assert out["cache"] is cache
    # nothing written, nothing changed: no weights, no store, the caller's recipe and RNG as they were
    assert not weights.exists() and not db.exists() and list(tmp_path.iterdir()) == []
    assert repr(recipe) == before and torch.equal(torch.get_rng_state(), rng)


def test_training_throughput_with_workers_and_the_recipe_size(synth_root, tmp_path):
    recipe = tiny_recipe("unet_ce_dice", size=(64, 32))
    recipe.data.workers = 2
    out = training_throughput(recipe, data_root=synth_root, device="cpu", iters=2, warmup=0)
    assert out["size"] == "64x32" and out["workers"] == 2
    assert out["train_images_per_second"] > 0 and out["data_images_per_second"] > 0


def test_training_throughput_rejects_bad_arguments(synth_root):
    recipe = tiny_recipe("unet_ce_dice")
    with pytest.raises(ValueError, match="iters"):
        training_throughput(recipe, data_root=synth_root, device="cpu", iters=0)
    with pytest.raises(ValueError, match="WxH"):
        training_throughput(recipe, data_root=synth_root, device="cpu", size="64by32")


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@cuda
def test_training_throughput_on_cuda_is_bf16_channels_last(synth_root):
    recipe = tiny_recipe("unet_ce_dice", size=(64, 32))
    out = training_throughput(recipe, data_root=synth_root, device="cuda", iters=2, warmup=1)
    assert out["precision"] == "bf16" and out["channels_last"] is True and out["compile"] is False
    assert out["train_images_per_second"] > 0


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=cuda)])
def test_loss_meter_reads_without_waiting_and_sees_nan(device):
    from engine.train import LossMeter

    dev = torch.device(device)
    meter = LossMeter(dev)

    def settled():  # on CUDA, poll until the device has finished a copy of the current sum
        for _ in range(3):
            meter.poll()
            if device == "cuda":
                torch.cuda.synchronize()
        return meter.poll()

    for v in (1.0, 2.0, 3.0):
        meter.add(torch.tensor(v, device=dev))
    first = meter.poll()  # never waits: CPU, the current mean; CUDA, None until a copy has finished
    assert first == (2.0, 3) if device == "cpu" else first in (None, (2.0, 3))
    assert settled() == (2.0, 3) and meter.mean() == 2.0
    meter.add(torch.tensor(float("nan"), device=dev))
    latest = settled()
    assert latest[1] == 4 and math.isnan(latest[0]) and math.isnan(meter.mean())
