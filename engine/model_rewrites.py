"""Inference-time rewrites of a trained model that keep what it computes, only faster.

- `fold_batchnorm`: every eval-mode BatchNorm2d that reads a Conv2d's output is folded into that
  conv's weight and bias (torch's `fuse_conv_bn_eval`) and replaced by Identity: one pass fewer
  over every activation. Pairs are found by running the model once on a small input with hooks,
  so it works for any architecture, and the result is checked against the original.
- `ShiftedGemmConv2d` / `rewrite_wide_dilations`: a 3x3 conv with a large dilation (DeepLabV3's
  ASPP uses 12, 24 and 36) becomes one 1x1 conv to 9x the output channels - a plain GEMM - and
  nine shifted adds. oneDNN's AMX kernels run such dilated convs 4-6x below their dense speed
  (`python -m engine bench` records what this buys); taps that fall wholly in the zero padding
  are skipped.
- `prepare_for_inference`: both of the above; `weights_in`: a copy with conv weights cast once to
  the inference dtype, so autocast no longer re-casts them on every call.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

WIDE_DILATION = 8   # dilations from here on are rewritten on the CPU (measured: d=4 is faster as is)


def _set_module(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, child, module)


def conv_bn_pairs(model: nn.Module, example: torch.Tensor) -> list[tuple[str, str]]:
    """(conv name, batchnorm name) for each BatchNorm2d whose input is the output of a Conv2d,
    each called once, found by one forward pass over `example`."""
    names = {m: n for n, m in model.named_modules()}
    produced: dict[int, tuple[str, torch.Tensor]] = {}   # id(output) -> (conv, output kept alive)
    calls: dict[str, int] = {}
    pairs = []

    def after_conv(mod, _inp, out):
        calls[names[mod]] = calls.get(names[mod], 0) + 1
        produced[id(out)] = (names[mod], out)

    def before_bn(mod, inp):
        calls[names[mod]] = calls.get(names[mod], 0) + 1
        hit = produced.get(id(inp[0]))
        if hit is not None and hit[1] is inp[0]:
            pairs.append((hit[0], names[mod]))

    hooks = [m.register_forward_hook(after_conv) for m in model.modules() if type(m) is nn.Conv2d]
    hooks += [m.register_forward_pre_hook(before_bn) for m in model.modules() if type(m) is nn.BatchNorm2d]
    try:
        with torch.inference_mode():
            model(example)
    finally:
        for h in hooks:
            h.remove()
    return [(c, b) for c, b in pairs if calls[c] == 1 and calls[b] == 1]


def _max_rel_diff(a: dict, b: dict) -> float:
    return max(float((a[k] - b[k]).abs().max() / b[k].abs().max().clamp_min(1e-12)) for k in b)


def fold_batchnorm(model: nn.Module, example: torch.Tensor, tolerance: float = 1e-4) -> tuple[nn.Module, int]:
    """A copy of eval-mode `model` with conv->BN pairs folded; (model, pairs folded). Returns the
    model unchanged (0 pairs) if the folded copy's fp32 outputs on `example` differ by more than
    `tolerance` relative to their largest value."""
    model = model.eval()
    pairs = conv_bn_pairs(model, example)
    if not pairs:
        return model, 0
    fused = copy.deepcopy(model)
    for conv_name, bn_name in pairs:
        conv, bn = fused.get_submodule(conv_name), fused.get_submodule(bn_name)
        _set_module(fused, conv_name, fuse_conv_bn_eval(conv, bn))
        _set_module(fused, bn_name, nn.Identity())
    with torch.inference_mode():
        if _max_rel_diff(fused(example), model(example)) > tolerance:
            return model, 0
    return fused, len(pairs)


class ShiftedGemmConv2d(nn.Module):
    """A stride-1, 'same'-padded 3x3 conv with dilation d, as a 1x1 conv to 9 x out_channels
    (one GEMM at dense speed) followed by nine shifted adds in float32."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        d = conv.dilation[0]
        assert conv.kernel_size == (3, 3) and conv.stride == (1, 1) and conv.groups == 1
        assert conv.dilation == (d, d) and conv.padding == (d, d) and conv.padding_mode == "zeros"
        self.dilation, self.out_channels = d, conv.out_channels
        w = conv.weight.detach()                              # (O, I, 3, 3) -> (9*O, I, 1, 1), tap-major
        self.weight = nn.Parameter(w.permute(2, 3, 0, 1).reshape(9 * w.shape[0], w.shape[1], 1, 1).contiguous(),
                                   requires_grad=False)
        self.bias = None if conv.bias is None else nn.Parameter(conv.bias.detach().clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        o, d = self.out_channels, self.dilation
        taps = F.conv2d(x, self.weight)
        out = torch.zeros((n, o, h, w), dtype=torch.float32, device=x.device).contiguous(
            memory_format=torch.channels_last if x.is_contiguous(memory_format=torch.channels_last)
            else torch.contiguous_format)
        for k in range(9):
            dy, dx = (k // 3 - 1) * d, (k % 3 - 1) * d
            if abs(dy) >= h or abs(dx) >= w:          # the tap only ever reads zero padding
                continue
            out[:, :, max(0, -dy):h - max(0, dy), max(0, -dx):w - max(0, dx)] += \
                taps[:, k * o:(k + 1) * o, max(0, dy):h - max(0, -dy), max(0, dx):w - max(0, -dx)]
        if self.bias is not None:
            out += self.bias.view(1, -1, 1, 1)
        return out.to(x.dtype)


def rewrite_wide_dilations(model: nn.Module, min_dilation: int = WIDE_DILATION) -> int:
    """Replace, in place, each rewritable 3x3 conv with dilation >= min_dilation; returns how many."""
    targets = [(n, m) for n, m in model.named_modules() if type(m) is nn.Conv2d and m.kernel_size == (3, 3)
               and m.stride == (1, 1) and m.groups == 1 and m.dilation[0] == m.dilation[1] >= min_dilation
               and m.padding == m.dilation and m.padding_mode == "zeros"]
    for name, conv in targets:
        _set_module(model, name, ShiftedGemmConv2d(conv))
    return len(targets)


def prepare_for_inference(model: nn.Module, device: torch.device, memory_format=torch.contiguous_format,
                          example_size: tuple[int, int] = (64, 128)) -> tuple[nn.Module, dict]:
    """Eval-mode float32 `model` -> (a faster float32 model computing the same function on
    `device`, a summary of what was rewritten)."""
    example = torch.randn(1, 3, *example_size)
    model, folded = fold_batchnorm(model.eval().cpu().float(), example)
    rewritten = rewrite_wide_dilations(model) if device.type == "cpu" else 0
    return model.to(device, memory_format=memory_format), {"batchnorm_folded": folded, "dilated_rewritten": rewritten}


def weights_in(model: nn.Module, precision: str) -> nn.Module:
    """A copy of `model` with conv and linear weights stored in the autocast dtype of `precision`
    (bf16 | fp16), so autocast does not re-cast them on every call; other modules stay float32."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    model = copy.deepcopy(model)
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, ShiftedGemmConv2d, nn.Linear)):
            m.to(dtype)
    return model
