"""Markdown table of `python -m engine bench --json` output (one JSON object per line), for docs/benchmarks.md.

    python -m engine bench --sizes 1024x512 --json > bench.jsonl
    python scripts/bench_table.py bench.jsonl [more.jsonl ...]
"""
from __future__ import annotations

import json
import sys


def calibration(cal: dict | None) -> str:
    """'full bf16 98.55% -> mixed, 79% of conv FLOPs in bf16 (99.50%)' and the like."""
    if not cal:
        return "-"
    full = cal.get("bf16_agreement", cal.get("agreement"))    # rows from before mixed precision: agreement only
    text = f"full bf16 {full:.2%} -> " if full is not None else ""
    if cal["chosen"] == "mixed":
        return text + f"mixed, {cal['bf16_share']:.0%} of conv FLOPs in bf16 ({cal['agreement']:.2%})"
    return text + cal["chosen"]


def main(paths: list[str]) -> None:
    rows = [json.loads(line) for p in paths for line in open(p) if line.startswith("{")]
    if not rows:
        sys.exit("no benchmark rows in " + ", ".join(paths))
    print("| variant | size | fast path | calibration | model ms/frame: baseline -> fast | x "
          "| end-to-end fps: baseline -> fast | x | agreement |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        cal = calibration(r.get("calibration"))
        print(f"| {r['variant']} | {r['size']} | {r['backend']} {r['precision']}, batch {r['batch_size']} | {cal} "
              f"| {r['baseline_model_ms']:.0f} -> {r['fast_model_ms']:.0f} | {r['model_speedup']:.2f} "
              f"| {r['baseline_fps']:.3f} -> {r['fast_fps']:.3f} | **{r['speedup']:.2f}** | {r['agreement']:.4%} |")
    r = rows[0]
    print(f"\n{r['device']}, {r['threads']} threads, torch {r['torch_version']}, {r['frames']} frames per video.")


if __name__ == "__main__":
    main(sys.argv[1:])
