"""Markdown table of `python -m engine bench --json` output (one JSON object per line), for docs/benchmarks.md.

    python -m engine bench --sizes 1024x512 --json > bench.jsonl
    python scripts/bench_table.py bench.jsonl [more.jsonl ...]
"""
from __future__ import annotations

import json
import sys


def main(paths: list[str]) -> None:
    rows = [json.loads(line) for p in paths for line in open(p) if line.startswith("{")]
    if not rows:
        sys.exit("no benchmark rows in " + ", ".join(paths))
    print("| variant | size | fast path | bf16 calibration | model ms/frame: baseline -> fast | x "
          "| end-to-end fps: baseline -> fast | x | agreement |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        cal = r.get("calibration")
        cal = f"{cal['agreement']:.2%} -> {cal['chosen']}" if cal else "-"
        print(f"| {r['variant']} | {r['size']} | {r['backend']} {r['precision']}, batch {r['batch_size']} | {cal} "
              f"| {r['baseline_model_ms']:.0f} -> {r['fast_model_ms']:.0f} | {r['model_speedup']:.2f} "
              f"| {r['baseline_fps']:.3f} -> {r['fast_fps']:.3f} | **{r['speedup']:.2f}** | {r['agreement']:.4%} |")
    r = rows[0]
    print(f"\n{r['device']}, {r['threads']} threads, torch {r['torch_version']}, {r['frames']} frames per video.")


if __name__ == "__main__":
    main(sys.argv[1:])
