"""The one inference path with its fast-path options, on a real tiny checkpoint trained by the engine."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from engine import checkpoints, runtime
from engine.data.synthetic import render_scene
from engine.inference import InferenceOptions, Segmenter, sliding_window_logits
from engine.runtime import DeviceUnavailable, cpu_has_fast_bf16, forward_logits, resolve_precision


@pytest.fixture(scope="module")
def ckpt(trained):
    return trained.weights / trained.variant / "best.pt"


@pytest.fixture(scope="module")
def frames():
    return [render_scene(np.random.default_rng(k), 96, 48)[0] for k in range(3)]


def test_precision_resolution():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_precision("auto", cpu) == "fp32" and resolve_precision("auto", cuda) == "bf16"
    assert resolve_precision("bf16", cpu) == "bf16"
    with pytest.raises(DeviceUnavailable, match="fp16"):
        resolve_precision("fp16", cpu)
    with pytest.raises(ValueError):
        InferenceOptions(precision="int4")
    with pytest.raises(ValueError):
        InferenceOptions(backend="tensorrt")


def test_fast_path_agrees_with_the_baseline_and_batches_equal_single_frames(ckpt, frames):
    base = Segmenter(ckpt, "cpu", options=InferenceOptions.baseline())
    fast = Segmenter(ckpt, "cpu", options=InferenceOptions(batch_size=2, precision="fp32"))  # channels_last, rewrites
    assert fast.precision == "fp32" and fast.memory_format == torch.channels_last
    assert fast.rewrites["batchnorm_folded"] > 50 and fast.rewrites["dilated_rewritten"] == 3  # ResNet-50 + ASPP
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.model.modules())
    batched = fast.predict_batch(frames)
    single = [base.predict(f) for f in frames]
    assert [b.shape for b in batched] == [(48, 96)] * 3 and all(b.dtype == np.uint8 for b in batched)
    agreement = np.mean([np.mean(a == b) for a, b in zip(batched, single)])
    assert agreement >= 0.999
    with pytest.raises(ValueError, match="one size"):
        fast.predict_batch([frames[0], frames[0][:40]])


def test_batch_size_defaults_to_one_frame_on_the_cpu(ckpt, frames):
    auto = Segmenter(ckpt, "cpu", options=InferenceOptions(precision="fp32"))
    assert InferenceOptions().batch_size is None and auto.options.batch_size == 1
    assert Segmenter(ckpt, "cpu", options=InferenceOptions(batch_size=3, precision="fp32")).options.batch_size == 3
    assert len(auto.predict_batch(frames)) == 3
    with pytest.raises(ValueError, match="at least 1"):
        InferenceOptions(batch_size=0)


def test_native_input_size_and_the_recipe_size(ckpt, frames):
    recipe_size = Segmenter(ckpt, "cpu")
    native = Segmenter(ckpt, "cpu", input_size="native")
    assert recipe_size.input_size == (64, 32) and native._model_input_size(48, 96) == (48, 96)
    assert recipe_size._model_input_size(48, 96) == (32, 64)
    assert native.predict(frames[0]).shape == (48, 96)


def test_flip_tta_averages_the_mirrored_prediction(ckpt):
    seg = Segmenter(ckpt, "cpu", options=InferenceOptions(flip=True, channels_last=False, precision="fp32"))
    model = checkpoints.build_from(checkpoints.load(ckpt))
    x = torch.randn(1, 3, 32, 64)
    with torch.inference_mode():
        expected = (forward_logits(model, x) + forward_logits(model, x.flip(-1)).flip(-1)) / 2
    assert torch.allclose(seg.logits(x), expected, atol=1e-4)
    scales = Segmenter(ckpt, "cpu", options=InferenceOptions(scales=(0.5, 1.0), channels_last=False, precision="fp32"))
    assert scales.logits(x).shape == (1, 19, 32, 64)


def test_sliding_window_covers_the_image_and_equals_whole_image_when_the_window_fits(ckpt):
    calls = []

    def forward(x):
        calls.append(tuple(x.shape[-2:]))
        return torch.ones(x.shape[0], 19, *x.shape[-2:])

    out = sliding_window_logits(forward, torch.zeros(2, 3, 50, 100), (40, 30), 19)
    assert out.shape == (2, 19, 50, 100) and torch.allclose(out, torch.ones_like(out))  # every pixel covered
    assert all(c == (30, 40) for c in calls) and len(calls) > 4
    whole = Segmenter(ckpt, "cpu", options=InferenceOptions(channels_last=False, precision="fp32"))
    windowed = Segmenter(ckpt, "cpu", options=InferenceOptions(channels_last=False, window=(64, 32), precision="fp32"))
    x = torch.randn(1, 3, 32, 64)
    assert torch.allclose(whole.logits(x), windowed.logits(x), atol=1e-5)
    big = Segmenter(ckpt, "cpu", input_size="native", options=InferenceOptions(window=(64, 32)))
    assert big.predict(render_scene(np.random.default_rng(9), 160, 80)[0]).shape == (80, 160)


def test_bf16_on_cpu_when_asked(ckpt, frames):
    seg = Segmenter(ckpt, "cpu", options=InferenceOptions(precision="bf16"))
    assert seg.precision == "bf16" and seg.calibration is None
    conv = next(m for m in seg.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.dtype == torch.bfloat16          # cast once, not by autocast on every call
    assert seg.predict(frames[0]).shape == (48, 96)


def test_auto_precision_on_a_bf16_cpu_is_calibrated_per_checkpoint(ckpt, frames, monkeypatch):
    monkeypatch.setattr(runtime, "cpu_has_fast_bf16", lambda: True)  # the branch of a bf16 CPU, on any CPU
    easy = Segmenter(ckpt, "cpu", options=InferenceOptions(min_agreement=0.0))
    assert easy.precision == "bf16" and easy.calibration["chosen"] == "bf16"
    assert 0.0 <= easy.calibration["agreement"] <= 1.0 and easy.calibration["size"] == "64x32"
    strict = Segmenter(ckpt, "cpu", options=InferenceOptions(min_agreement=1.01))  # no model can pass
    assert strict.precision == "fp32" and strict.calibration["chosen"] == "fp32"
    conv = next(m for m in strict.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.dtype == torch.float32
    exact = Segmenter(ckpt, "cpu", options=InferenceOptions(precision="fp32"))
    assert all(np.array_equal(a, b) for a, b in zip(strict.predict_batch(frames), exact.predict_batch(frames)))


def test_auto_precision_without_native_bf16_is_float32(ckpt, monkeypatch):
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
    assert not cpu_has_fast_bf16()
    seg = Segmenter(ckpt, "cpu")
    assert seg.precision == "fp32" and seg.calibration is None
