"""Inference-time rewrites keep what a model computes: BatchNorm folding on every architecture,
wide dilations as GEMM + shifts, and the check that refuses a fold that would change outputs."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from engine.model_rewrites import (ShiftedGemmConv2d, conv_bn_pairs, fold_batchnorm, prepare_for_inference,
                                   rewrite_wide_dilations, weights_in)
from engine.models import build_model


def _randomise_bn(model: nn.Module) -> nn.Module:
    """Running statistics and affine parameters away from their defaults, as after training."""
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model.eval()


@pytest.mark.parametrize("arch", ["deeplabv3_r50", "hrnetv2_w48", "unet"])
def test_every_batchnorm_is_folded_and_outputs_stay(arch):
    torch.manual_seed(0)
    model = _randomise_bn(build_model(arch))
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    x = torch.randn(1, 3, 48, 80)
    folded, count = fold_batchnorm(model, torch.randn(1, 3, 32, 64))
    assert count == n_bn and not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    with torch.inference_mode():
        ref, out = model(x)["out"], folded(x)["out"]
    assert torch.allclose(out, ref, rtol=1e-3, atol=1e-4 * float(ref.abs().max()))
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # the original is left alone


class ConvFeedsTwo(nn.Module):
    """The conv's output is read by the BatchNorm and by the residual add: folding would be wrong."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3)

    def forward(self, x):
        y = self.conv(x)
        return {"out": self.bn(y) + y}


def test_a_fold_that_would_change_outputs_is_refused():
    model = _randomise_bn(ConvFeedsTwo())
    x = torch.randn(1, 3, 16, 16)
    assert conv_bn_pairs(model, x) == [("conv", "bn")]   # the hooks alone cannot tell
    folded, count = fold_batchnorm(model, x)
    assert count == 0 and folded is model


@pytest.mark.parametrize("dilation,size", [(8, (40, 56)), (12, (64, 128)), (36, (20, 50))])
def test_shifted_gemm_conv_equals_the_dilated_conv(dilation, size):
    torch.manual_seed(0)
    conv = nn.Conv2d(16, 8, 3, padding=dilation, dilation=dilation, bias=True).eval()
    x = torch.randn(2, 16, *size)
    with torch.inference_mode():
        ref = conv(x)
        out = ShiftedGemmConv2d(conv)(x)
        out_cl = ShiftedGemmConv2d(conv)(x.contiguous(memory_format=torch.channels_last))
    assert out.shape == ref.shape and torch.allclose(out, ref, atol=1e-5)
    assert torch.allclose(out_cl, ref, atol=1e-5) and out_cl.is_contiguous(memory_format=torch.channels_last)


def test_deeplab_aspp_is_rewritten_on_cpu_and_weights_cast_once():
    torch.manual_seed(0)
    model = _randomise_bn(build_model("deeplabv3_r50"))
    fast, info = prepare_for_inference(model, torch.device("cpu"))
    assert info == {"batchnorm_folded": 60, "dilated_rewritten": 3}
    assert sum(isinstance(m, ShiftedGemmConv2d) for m in fast.modules()) == 3
    x = torch.randn(1, 3, 64, 96)
    with torch.inference_mode():
        ref, out = model(x)["out"], fast(x)["out"]
    assert torch.allclose(out, ref, rtol=1e-3, atol=1e-4 * float(ref.abs().max()))
    assert rewrite_wide_dilations(nn.Sequential(nn.Conv2d(4, 4, 3, padding=4, dilation=4))) == 0  # small: kept
    half = weights_in(fast, "bf16")
    assert {m.weight.dtype for m in half.modules() if isinstance(m, (nn.Conv2d, ShiftedGemmConv2d))} == {torch.bfloat16}
    assert {m.weight.dtype for m in fast.modules() if isinstance(m, nn.Conv2d)} == {torch.float32}  # a copy
