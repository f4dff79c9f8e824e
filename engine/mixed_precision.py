"""Per-layer bf16: the convs whose bf16 rounding moves a checkpoint's labels least run in bf16, the rest
in float32 - for checkpoints whose labels do not survive bf16 everywhere.

A barely trained model can have near-tied logits that bf16 rounding flips, yet most of its convs
barely matter for that: on the quick demo's HRNet AdamW checkpoint at 1024x512, the least
sensitive half of the conv FLOPs in bf16 moved 0.04-0.06 % of the labels, all of them 1.3-1.45 %
(docs/benchmarks.md). So:

1. `conv_sensitivity`: each conv's own effect - the relative change of the logits when that conv
   alone runs in bf16 - measured for every conv in a few batched forward passes over a small
   copy of the calibration scene (batch element k has conv k in bf16; in eval mode no layer mixes
   batch elements);
2. `calibrate_mixed`: convs ranked by that effect per FLOP; the largest share of conv FLOPs in
   `SHARES` (97.5 % down to 30 % in steps of 2.5 %), taken in that order, whose labels on the
   full-size calibration scene agree with float32 on at least `min_agreement` of the pixels (a
   binary search: five forward passes).

`MixedConv` runs a conv in either precision and takes either dtype in: a bf16 conv hands bf16 on
(elementwise ops promote back to float32 where they meet it), a float32 conv reads float32.

`choose_precision` is the fast path's one decision of precision (`engine.inference.Segmenter`):
"auto" is bf16 on CUDA; on a CPU with native bf16 it is calibrated per checkpoint on a synthetic
street scene at the model's input size: bf16 if that keeps `min_agreement` of the float32 labels,
else the per-conv search above, else float32; elsewhere float32. "mixed" runs the search alone.
"""
from __future__ import annotations

import copy
import time
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from engine import runtime
from engine.data.synthetic import render_scene
from engine.data.transforms import to_tensor
from engine.model_rewrites import ShiftedGemmConv2d, _set_module, weights_in

CONVS = (nn.Conv2d, nn.ConvTranspose2d, ShiftedGemmConv2d)
SHARES = tuple(x / 40 for x in range(39, 11, -1))   # shares of the conv FLOPs in bf16 tried: 97.5 %, 95 %, ... 30 %
PROBE_BATCH = 16   # convs probed per forward pass


class MixedConv(nn.Module):
    """A conv in float32 or bf16 (`bf16`). While `probe` is an index k, every batch element runs in
    float32 except element k, which runs in bf16 (used to measure the conv's own effect)."""

    def __init__(self, conv: nn.Module):
        super().__init__()
        self.fp32_conv = conv
        self.bf16_conv = copy.deepcopy(conv).to(torch.bfloat16)
        self.bf16 = False
        self.probe: int | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.probe is not None:
            y = self.fp32_conv(x.float())
            k = self.probe
            if k < y.shape[0]:
                y[k:k + 1] = self.bf16_conv(x[k:k + 1].to(torch.bfloat16)).float()
            return y
        if self.bf16:
            return self.bf16_conv(x.to(torch.bfloat16))
        return self.fp32_conv(x.float())

    def settle(self) -> None:
        """Drop the copy that is not used."""
        if self.bf16:
            self.fp32_conv = None
        else:
            self.bf16_conv = None


def wrap_convs(model: nn.Module) -> dict[str, MixedConv]:
    """Replace, in place, every conv of `model` with a MixedConv (float32 for now); name -> wrapper."""
    names = [n for n, m in model.named_modules() if isinstance(m, CONVS)]
    wrapped = {}
    for name in names:
        wrapped[name] = MixedConv(model.get_submodule(name))
        _set_module(model, name, wrapped[name])
    return wrapped


def conv_flops(model: nn.Module, wrapped: dict[str, MixedConv], x: torch.Tensor) -> dict[str, float]:
    """Multiply-accumulates of each wrapped conv on input `x` (one forward pass)."""
    macs: dict[str, float] = {}

    def hook(name):
        def count(mod, inp, out):
            spatial = (inp[0] if isinstance(mod.fp32_conv, nn.ConvTranspose2d) else out).shape
            macs[name] = float(mod.fp32_conv.weight.numel() * spatial[0] * spatial[-1] * spatial[-2])
        return count

    handles = [w.register_forward_hook(hook(n)) for n, w in wrapped.items()]
    try:
        with torch.inference_mode():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return macs


def conv_sensitivity(logits: Callable[[torch.Tensor], torch.Tensor], wrapped: dict[str, MixedConv],
                     x: torch.Tensor, batch: int = PROBE_BATCH) -> dict[str, float]:
    """For each wrapped conv: mean |logits with that conv alone in bf16 - float32 logits| relative
    to mean |float32 logits|, on the single image `x` (1, 3, H, W)."""
    for w in wrapped.values():
        w.bf16, w.probe = False, None
    with torch.inference_mode():
        ref = logits(x).float()
        scale = ref.abs().mean().clamp_min(1e-12)
        names, errors = list(wrapped), {}
        for start in range(0, len(names), batch):
            chunk = names[start:start + batch]
            for k, name in enumerate(chunk):
                wrapped[name].probe = k
            try:
                out = logits(x.expand(len(chunk), *x.shape[1:]).contiguous(memory_format=_format(x))).float()
            finally:
                for name in chunk:
                    wrapped[name].probe = None
            for k, name in enumerate(chunk):
                errors[name] = float((out[k] - ref[0]).abs().mean() / scale)
    return errors


def _format(x: torch.Tensor):
    return torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format


def set_bf16(wrapped: dict[str, MixedConv], names) -> None:
    names = set(names)
    for n, w in wrapped.items():
        w.bf16 = n in names


def calibrate_mixed(model: nn.Module, x: torch.Tensor, x_small: torch.Tensor, min_agreement: float,
                    forward: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None,
                    shares=SHARES, reference: torch.Tensor | None = None) -> tuple[nn.Module, dict]:
    """Float32 `model` -> (a copy with every conv wrapped in a MixedConv and the chosen ones in
    bf16, a summary). `x` is the calibration image at the inference size, `x_small` a small version
    of it for the per-conv probes; `forward(model, batch)` gives logits (default: `model(batch)["out"]`).
    `reference`: the float32 labels of `x`, where the caller has them already. The summary holds
    the chosen share of conv FLOPs in bf16 (0 if no share in `shares` keeps `min_agreement`), its
    agreement with float32 on `x`, and counts of convs."""
    model = copy.deepcopy(model)
    forward = forward or (lambda m, b: m(b)["out"])

    def logits(batch: torch.Tensor) -> torch.Tensor:
        return forward(model, batch)

    wrapped = wrap_convs(model)
    macs = conv_flops(model, wrapped, x_small)
    errors = conv_sensitivity(logits, wrapped, x_small)
    order = sorted(wrapped, key=lambda n: errors[n] / max(macs[n], 1.0))
    total = sum(macs.values())

    def prefix(share: float) -> list[str]:
        chosen, acc = [], 0.0
        for n in order:
            if acc + macs[n] > share * total * (1 + 1e-9):
                break
            chosen.append(n)
            acc += macs[n]
        return chosen

    with torch.inference_mode():
        set_bf16(wrapped, [])
        ref = logits(x).argmax(1) if reference is None else reference
        tried: dict[int, float] = {}

        def agreement(i: int) -> float:
            if i not in tried:
                set_bf16(wrapped, prefix(shares[i]))
                tried[i] = float((logits(x).argmax(1) == ref).float().mean())
            return tried[i]

        lo, hi = 0, len(shares)      # shares[i] falls as i rises; find the first i that passes
        while lo < hi:
            mid = (lo + hi) // 2
            if agreement(mid) >= min_agreement:
                hi = mid
            else:
                lo = mid + 1
    best = lo if lo < len(shares) else None
    chosen = prefix(shares[best]) if best is not None else []
    set_bf16(wrapped, chosen)
    for w in wrapped.values():
        w.settle()
    share = sum(macs[n] for n in chosen) / total if total else 0.0
    return model, {"bf16_share": share, "agreement": tried[best] if best is not None else 1.0,
                   "bf16_convs": len(chosen), "convs": len(wrapped), "tried": len(tried)}


def in_precision(model: nn.Module, precision: str, rewrite: bool = True) -> nn.Module:
    """With the rewrites on, a copy whose conv weights are stored in the autocast dtype; else `model`."""
    return weights_in(model, precision) if rewrite and precision in ("bf16", "fp16") else model


def calibration_scene(size: tuple[int, int], device: torch.device, memory_format=torch.contiguous_format) -> torch.Tensor:
    """The calibration input: a synthetic street scene of `size` (W, H), normalised, (1, 3, H, W)."""
    image = render_scene(np.random.default_rng(0), *size)[0]
    return to_tensor(image)[None].to(device).contiguous(memory_format=memory_format)


def choose_precision(model: nn.Module, device: torch.device, options, size: tuple[int, int]
                     ) -> tuple[nn.Module, str, dict | None]:
    """(model in the chosen precision, the precision, the calibration record or None) for a float32
    `model` (rewritten or not, per `options.rewrite`) and `options` (`InferenceOptions`: precision,
    min_agreement, rewrite, channels_last); `size` (W, H) is the model's input size, at which a
    calibration runs. The record says what was chosen ("chosen": bf16 | mixed | fp32), its
    "agreement" with float32 on the calibration scene, full bf16's ("bf16_agreement", auto only)
    and, after a per-conv search, the share of conv FLOPs in bf16 ("bf16_share") and conv counts."""
    precision = runtime.resolve_precision(options.precision, device)
    calibrated = options.precision == "mixed" or (
        options.precision == "auto" and device.type == "cpu" and runtime.cpu_has_fast_bf16())
    if not calibrated:
        return in_precision(model, precision, options.rewrite), precision, None
    start = time.perf_counter()
    memory_format = torch.channels_last if options.channels_last else torch.contiguous_format
    w, h = size
    x = calibration_scene((w, h), device, memory_format)
    record: dict = {"size": f"{w}x{h}"}
    ref = None                                      # float32 labels of the scene, once
    if options.precision == "auto":
        fast = in_precision(model, "bf16", options.rewrite)
        with torch.inference_mode():
            ref = runtime.forward_logits(model, x, "fp32").argmax(1)
            agreement = float((runtime.forward_logits(fast, x, "bf16").argmax(1) == ref).float().mean())
        record["bf16_agreement"] = agreement
        if agreement >= options.min_agreement:
            record.update(chosen="bf16", agreement=agreement, seconds=time.perf_counter() - start)
            return fast, "bf16", record
    small = calibration_scene((max(64, w // 8), max(32, h // 8)), device, memory_format)  # for the per-conv probes
    mixed, summary = calibrate_mixed(model, x, small, options.min_agreement, reference=ref,
                                     forward=lambda m, b: runtime.forward_logits(m, b, "mixed"))
    chosen = "mixed" if summary["bf16_convs"] else "fp32"
    record.update(summary, chosen=chosen, seconds=time.perf_counter() - start)
    return (mixed if chosen == "mixed" else model), chosen, record
