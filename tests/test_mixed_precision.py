"""Per-layer bf16 (engine.mixed_precision): the batched probes measure each conv alone, the search
keeps the agreement it reports, and the Segmenter picks bf16 / mixed / float32 by calibration."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from engine import checkpoints, runtime
from engine.data.synthetic import render_scene
from engine.inference import InferenceOptions, Segmenter
from engine.mixed_precision import SHARES, MixedConv, calibrate_mixed, conv_flops, conv_sensitivity, wrap_convs
from engine.model_rewrites import ShiftedGemmConv2d, prepare_for_inference
from engine.models.unet import UNet
from engine.runtime import forward_logits


def _logits(model, x):
    return forward_logits(model, x, "mixed")


@pytest.fixture(scope="module")
def unet():
    """A small UNet (Conv2d and ConvTranspose2d) with BatchNorm folded, and two inputs."""
    torch.manual_seed(0)
    model, _ = prepare_for_inference(UNet(base=8), torch.device("cpu"), torch.channels_last)
    x = torch.randn(1, 3, 64, 128).contiguous(memory_format=torch.channels_last)
    return model, x, x[..., ::2, ::2].contiguous(memory_format=torch.channels_last)


def test_batched_probes_equal_one_conv_at_a_time(unet):
    model, _, small = unet
    model = copy.deepcopy(model)
    wrapped = wrap_convs(model)
    assert any(isinstance(w.fp32_conv, torch.nn.ConvTranspose2d) for w in wrapped.values())
    errors = conv_sensitivity(lambda b: _logits(model, b), wrapped, small, batch=3)   # chunks of 3 cross layers
    with torch.inference_mode():
        ref = _logits(model, small)
        for name, w in wrapped.items():
            w.bf16 = True
            alone = float((_logits(model, small) - ref).abs().mean() / ref.abs().mean())
            w.bf16 = False
            assert errors[name] == pytest.approx(alone, rel=1e-3, abs=1e-7), name
    assert len(set(errors.values())) > len(errors) // 2 and all(e > 0 for e in errors.values())


class ConvThenUp(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.up = torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ConvTranspose2d(4, 2, 2, stride=2)

    def forward(self, x):
        return {"out": self.up(self.conv(x))}


def test_flops_count_each_conv_and_transposed_conv():
    model = ConvThenUp()
    wrapped = wrap_convs(model)
    assert set(wrapped) == {"conv", "up"} and isinstance(model.conv, MixedConv)
    macs = conv_flops(model, wrapped, torch.randn(2, 3, 10, 12))
    assert macs == {"conv": 2 * 4 * 3 * 9 * 10 * 12, "up": 2 * 4 * 2 * 4 * 10 * 12}   # the transposed one per input pixel


def test_the_search_keeps_the_agreement_it_reports_and_the_original_is_untouched(unet):
    model, x, small = unet
    before = [p.clone() for p in model.parameters()]
    with torch.inference_mode():
        ref = _logits(model, x).argmax(1)

    loose, summary = calibrate_mixed(model, x, small, min_agreement=0.0, forward=_logits)
    assert summary["bf16_share"] == pytest.approx(SHARES[0], abs=0.15) and summary["tried"] <= 6
    assert 0 < summary["bf16_convs"] < summary["convs"]
    kinds = [(w.bf16_conv is None, w.fp32_conv is None) for w in loose.modules() if isinstance(w, MixedConv)]
    assert set(kinds) == {(True, False), (False, True)}               # each keeps just the copy it runs

    strict, none = calibrate_mixed(model, x, small, min_agreement=1.01, forward=_logits)
    assert none["bf16_convs"] == 0 and none["bf16_share"] == 0.0
    with torch.inference_mode():
        assert torch.equal(_logits(strict, x), _logits(model, x))      # all float32: the same numbers

    for threshold in (0.999, 0.99):
        mixed, s = calibrate_mixed(model, x, small, min_agreement=threshold, forward=_logits)
        with torch.inference_mode():
            got = float((_logits(mixed, x).argmax(1) == ref).float().mean())
        assert got == pytest.approx(s["agreement"]) and (s["bf16_convs"] == 0 or got >= threshold)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert not any(isinstance(m, MixedConv) for m in model.modules())


def test_least_sensitive_convs_per_flop_go_to_bf16_first(unet):
    model, x, small = unet
    mixed, summary = calibrate_mixed(model, x, small, min_agreement=0.0, forward=_logits)
    probe = copy.deepcopy(model)
    wrapped = wrap_convs(probe)
    macs = conv_flops(probe, wrapped, small)
    errors = conv_sensitivity(lambda b: _logits(probe, b), wrapped, small)
    cost = {n: errors[n] / macs[n] for n in wrapped}
    chosen = {n for n, m in mixed.named_modules() if isinstance(m, MixedConv) and m.bf16}
    assert len(chosen) == summary["bf16_convs"] and chosen
    assert max(cost[n] for n in chosen) <= min(cost[n] for n in wrapped if n not in chosen)


def test_segmenter_precision_mixed(trained):
    ckpt = trained.weights / trained.variant / "best.pt"
    frame = np.ascontiguousarray(np.random.default_rng(0).integers(0, 255, (32, 64, 3), dtype=np.uint8))
    seg = Segmenter(ckpt, "cpu", options=InferenceOptions(precision="mixed", min_agreement=0.0))
    cal = seg.calibration
    assert seg.precision == "mixed" and cal["chosen"] == "mixed" and "bf16_agreement" not in cal  # no full-bf16 try
    assert cal["size"] == "64x32" and 0 < cal["bf16_convs"] < cal["convs"] and cal["seconds"] > 0
    assert any(isinstance(m.bf16_conv, ShiftedGemmConv2d) or isinstance(m.fp32_conv, ShiftedGemmConv2d)
               for m in seg.model.modules() if isinstance(m, MixedConv))   # works on top of the rewrites
    assert seg.predict(frame).shape == (32, 64)
    exact = Segmenter(ckpt, "cpu", options=InferenceOptions(precision="fp32"))
    none = Segmenter(ckpt, "cpu", options=InferenceOptions(precision="mixed", min_agreement=1.01))
    assert none.precision == "fp32" and none.calibration["chosen"] == "fp32"
    assert not any(isinstance(m, MixedConv) for m in none.model.modules())
    assert np.array_equal(none.predict(frame), exact.predict(frame))


def _bf16_ties_two_classes(trained, path):
    """The trained checkpoint with its classifier rewritten so that bf16 flips labels on every CPU:
    classes 0 and 1 get the same weights and biases 50 and 50 + 2**-6 (the others -50). In float32
    class 1 wins everywhere; in bf16 both biases round to 50, the two logits tie and argmax takes
    class 0 - everywhere, whatever the CPU (bf16 rounding is exact IEEE arithmetic)."""
    ckpt = checkpoints.load(trained.weights / trained.variant / "best.pt")
    model = checkpoints.build_from(ckpt)
    last = [m for m in model.classifier.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    with torch.no_grad():
        last.weight[1] = last.weight[0]
        last.bias.fill_(-50.0)
        last.bias[0], last.bias[1] = 50.0, 50.0 + 2 ** -6
    checkpoints.save(path, model.state_dict(), arch=ckpt["arch"], recipe=ckpt["recipe"], run_uid=ckpt["run_uid"],
                     epoch=ckpt["epoch"], iteration=ckpt["iteration"], metrics={})
    return path


def test_auto_tries_full_bf16_first_then_a_share_of_the_convs(trained, tmp_path, monkeypatch):
    monkeypatch.setattr(runtime, "cpu_has_fast_bf16", lambda: True)  # the branch of a bf16 CPU, on any CPU
    ckpt = _bf16_ties_two_classes(trained, tmp_path / "best.pt")
    size = (128, 64)
    seg = Segmenter(ckpt, "cpu", input_size=size, options=InferenceOptions(min_agreement=0.9))
    cal = seg.calibration
    assert cal["bf16_agreement"] == 0.0          # full bf16 labels every pixel 0, float32 labels it 1: tried first
    assert seg.precision == cal["chosen"] == "mixed"   # then the convs that keep the labels: the classifier in fp32
    assert cal["agreement"] >= 0.9 and 0.3 <= cal["bf16_share"] < 1
    classifier = [m for m in seg.model.classifier.modules() if isinstance(m, MixedConv)][-1]
    assert classifier.bf16_conv is None and classifier.fp32_conv is not None
    frame = render_scene(np.random.default_rng(0), *size)[0]      # the calibration scene itself
    exact = Segmenter(ckpt, "cpu", input_size=size, options=InferenceOptions(precision="fp32"))
    assert (exact.predict(frame) == 1).all()
    assert np.mean(seg.predict(frame) == exact.predict(frame)) == pytest.approx(cal["agreement"])
