"""Corruption throughput per group at a given size, without and with the cache (one process).

    python scripts/bench_corruptions.py [--size 2048x1024] [--images 2] [--severity 3] [--json]

For each corruption: the images/s of `robustness.corrupted_image` with an empty cache (corrupt +
write the PNG) and with the cache filled (read the PNG back), on synthetic street scenes of the
size asked; then the mean per group. The sweep runs this work in `--workers` processes beside the
model, so a sweep's corruption rate is about this times the workers, up to the cores.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine import robustness  # noqa: E402
from engine.data.cityscapes import find_samples, read_image  # noqa: E402
from engine.data.synthetic import write_synthetic_dataset  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="2048x1024")
    ap.add_argument("--images", type=int, default=2)
    ap.add_argument("--severity", type=int, default=3)
    ap.add_argument("--corruptions", default="all")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    w, h = (int(v) for v in a.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        write_synthetic_dataset(Path(tmp) / "d", train=1, val=a.images, size=(w, h), seed=0)
        samples = find_samples(Path(tmp) / "d", "val")
        images = [read_image(s.image) for s in samples]
        cache = Path(tmp) / "cache"
        robustness.corrupt(images[0][:64, :64], "glass_blur", 1)  # numba compiles glass blur once per process
        rows = []
        for name in robustness.select(a.corruptions):
            rates = []
            for _ in ("cold", "warm"):
                t = time.perf_counter()
                for s, image in zip(samples, images):
                    robustness.corrupted_image(s.image, s.stem, image, name, a.severity, cache)
                rates.append(len(images) / (time.perf_counter() - t))
            rows.append({"corruption": name, "group": robustness.group_of(name), "cold_img_s": rates[0],
                         "cached_img_s": rates[1]})
    groups = {}
    for r in rows:
        groups.setdefault(r["group"], []).append(r)
    summary = {g: {"cold_img_s": sum(r["cold_img_s"] for r in rs) / len(rs),
                   "cold_s_per_img": sum(1 / r["cold_img_s"] for r in rs) / len(rs),
                   "cached_img_s": sum(r["cached_img_s"] for r in rs) / len(rs)} for g, rs in groups.items()}
    setup = {"size": a.size, "images": a.images, "severity": a.severity, "library": robustness.library_version()}
    if a.json:
        print(json.dumps({**setup, "corruptions": rows, "groups": summary}))
        return 0
    print(f"{setup}")
    print(f"{'corruption':18s} {'group':9s} {'no cache img/s':>15s} {'cached img/s':>13s}")
    for r in rows:
        print(f"{r['corruption']:18s} {r['group']:9s} {r['cold_img_s']:15.2f} {r['cached_img_s']:13.1f}")
    print(f"\n{'group':9s} {'no cache: s/img':>16s} {'cached img/s':>13s}")
    for g, v in summary.items():
        print(f"{g:9s} {v['cold_s_per_img']:16.2f} {v['cached_img_s']:13.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
