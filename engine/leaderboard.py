"""The leaderboard as text: what `python -m engine runs` and the demo print (the dashboard shows the
same `Store.leaderboard()` rows as a table)."""
from __future__ import annotations

import math


def format_leaderboard(rows: list[dict]) -> str:
    def f(v, spec):
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "-".rjust(int(spec.split(".")[0] or 0))  # as wide as a number would be
        return format(v, spec)

    head = f"{'variant':30s} {'dataset':10s} {'status':11s} {'mIoU':>7s} {'pixAcc':>7s} {'mPC':>7s} {'rPC':>6s} " \
           f"{'params':>8s} " \
           f"{'size MB':>8s} {'GFLOPs':>8s} {'lat ms':>8s} {'train s':>8s}"
    lines = [head, "-" * len(head)]
    for r in rows:
        params = None if r.get("params") is None else r["params"] / 1e6
        lines.append(f"{r['variant']:30s} {r['dataset']:10s} {r['status']:11s} {f(r.get('miou'), '7.4f')} "
                     f"{f(r.get('pixel_accuracy'), '7.4f')} {f(r.get('mpc'), '7.4f')} {f(r.get('rpc'), '6.3f')} "
                     f"{f(params, '7.2f')}M {f(r.get('size_mb'), '8.1f')} "
                     f"{f(r.get('gflops'), '8.2f')} {f(r.get('latency_ms'), '8.1f')} {f(r.get('train_seconds'), '8.1f')}")
    setup = next((r["cost_setup_label"] for r in rows if r.get("cost_setup_label")), None)
    if setup:
        lines.append(f"(GFLOPs of one image and latency in ms on {setup}; each model at its own precision: "
                     "fp32, bf16 autocast on CUDA, int8 for an INT8 model)")
    if any(r["dataset"] == "synthetic" for r in rows):
        lines.append("(dataset 'synthetic': numbers on the built-in synthetic street scenes, not Cityscapes)")
    if any(r.get("mpc") is not None for r in rows):
        lines.append("(mPC: mean mIoU under the corruptions of the latest `robustness` sweep; rPC = mPC / clean mIoU)")
    return "\n".join(lines)
