"""What per-image results cost an evaluation: extra time and store size, per image and for 500.

    python scripts/bench_per_image.py [--variant deeplabv3_r50_adam] [--images 16] [--size 2048x1024]
                                      [--eval-size 256x128] [--json]

Writes `--images` synthetic scenes at `--size` (the ground truth's resolution: Cityscapes is
2048x1024) and evaluates a trained checkpoint on them three times in one process, as
`evaluate` does (its loader, whose workers compute each label's boundary band): without
per-image rows (the evaluation before them), with them, and with them and `--keep-predictions`. The model runs at `--eval-size` (small by default, so that the model's own
time, which per-image rows do not change, does not drown the difference; logits are still upsampled
to `--size` and argmaxed there as always). Each evaluation is recorded in a fresh SQLite store.
Reports the seconds per image of each (median of `--repeats`), the store's bytes per image row
(the file's growth over the evaluation without rows, VACUUMed), the kept PNGs' bytes, and both
extrapolated to 500 images (Cityscapes val).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from torch.utils.data import DataLoader  # noqa: E402

from engine.cli import _size  # noqa: E402
from engine.data import open_dataset  # noqa: E402
from engine.data.synthetic import write_synthetic_dataset  # noqa: E402
from engine.data.transforms import EvalTransform, eval_collate  # noqa: E402
from engine.evaluate import evaluate_model, image_results_for, load_checkpoint  # noqa: E402
from engine.metrics import ImageResults, WithBands  # noqa: E402
from engine.profiling import cpu_name  # noqa: E402
from engine.store import Store  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", default="deeplabv3_r50_adam")
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--size", type=_size, default=(2048, 1024))
    ap.add_argument("--eval-size", type=_size, default=(256, 128))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-per-image-"))
    try:
        write_synthetic_dataset(tmp / "data", train=1, val=a.images, size=a.size, seed=1)
        m = load_checkpoint(variant=a.variant, device="cpu", eval_size=a.eval_size)
        data = open_dataset("cityscapes", tmp / "data", "val", EvalTransform(m.size))
        stems = [s.stem for s in data.samples]

        def run(mode: str) -> tuple[float, object, ImageResults | None, Path | None]:
            per_image = image_results_for(data, range(len(data))) if mode != "plain" else None
            keep = tmp / "kept" / mode if mode == "keep" else None
            if keep is not None:
                shutil.rmtree(keep, ignore_errors=True)
            loader = DataLoader(data if per_image is None else WithBands(data), batch_size=1, collate_fn=eval_collate,
                                num_workers=min(2, os.cpu_count() or 1))  # as evaluate_loaded does
            t0 = time.perf_counter()
            metrics = evaluate_model(m.model, loader, m.device, per_image=per_image, keep_dir=keep, stems=stems,
                                     progress=False)
            return time.perf_counter() - t0, metrics, per_image, keep

        seconds = {mode: [] for mode in ("plain", "rows", "keep")}
        for _ in range(a.repeats):
            for mode in seconds:  # interleaved, so drift during the run hits all three alike
                seconds[mode].append(run(mode)[0])
        per_image_s = {mode: statistics.median(v) / a.images for mode, v in seconds.items()}

        def store_bytes(with_rows: bool) -> int:
            path = tmp / f"store-{with_rows}.db"
            _, metrics, per_image, _ = run("rows")
            with Store(f"sqlite:///{path}") as s:
                s.record_evaluation(run_id=None, variant=a.variant, checkpoint=m.path, checkpoint_sha256=m.sha256,
                                    dataset="synthetic", split="val", eval_size=m.eval_size, metrics=metrics,
                                    images=per_image.results if with_rows else None)
            with sqlite3.connect(path) as c:
                c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                c.execute("VACUUM")
            return path.stat().st_size

        row_bytes = (store_bytes(True) - store_bytes(False)) / a.images
        parts = components(data, m, a.repeats)
        _, _, _, keep = run("keep")
        png = [p.stat().st_size for p in keep.glob("*.png")]
        out = {"device": cpu_name(), "threads": int(os.environ.get("OMP_NUM_THREADS", 0)) or None,
               "variant": a.variant, "images": a.images, "size": f"{a.size[0]}x{a.size[1]}",
               "eval_size": m.eval_size, "seconds_per_image": per_image_s,
               "extra_s_per_image_rows": per_image_s["rows"] - per_image_s["plain"],
               "extra_s_per_image_keep": per_image_s["keep"] - per_image_s["plain"],
               "components_ms": parts, "store_bytes_per_image": row_bytes, "png_bytes_per_image": statistics.mean(png),
               "for_500_images": {"extra_s_rows": 500 * (per_image_s["rows"] - per_image_s["plain"]),
                                  "extra_s_keep": 500 * (per_image_s["keep"] - per_image_s["plain"]),
                                  "store_mb": 500 * row_bytes / 1e6, "png_mb": 500 * statistics.mean(png) / 1e6}}
        if a.json:
            print(json.dumps(out))
            return
        print(f"{a.variant}, {a.images} synthetic scenes at {out['size']} (model input {out['eval_size']}), "
              f"{out['device']}:")
        for mode, label in (("plain", "without per-image rows"), ("rows", "with per-image rows"),
                            ("keep", "with rows + --keep-predictions")):
            print(f"  {label:32s} {per_image_s[mode] * 1000:7.1f} ms per image")
        f = out["for_500_images"]
        print(f"  extra: {out['extra_s_per_image_rows'] * 1000:.1f} ms per image for the rows, "
              f"{out['extra_s_per_image_keep'] * 1000:.1f} ms with the kept PNG; 500 images: "
              f"+{f['extra_s_rows']:.0f} s / +{f['extra_s_keep']:.0f} s")
        print("  components, median ms per image: " + ", ".join(f"{k} {v:.1f}" for k, v in parts.items()))
        print(f"  store: {row_bytes / 1e3:.2f} kB per image row (500 images: {f['store_mb']:.2f} MB); kept PNG "
              f"{out['png_bytes_per_image'] / 1e3:.1f} kB per image (500 images: {f['png_mb']:.1f} MB)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def components(data, m, repeats: int) -> dict[str, float]:
    """Each step's own time on one image (median over the images and repeats): the boundary band (in
    a loader worker), the confusion counts without and with the band (one bincount either way), and
    the kept PNG's encoding."""
    import cv2
    import torch

    from engine.evaluate import KEPT_PNG_COMPRESSION, predict_labels
    from engine.metrics import band_of, confusion, confusion_in_and_out

    times: dict[str, list[float]] = {"band": [], "counts": [], "counts_and_band_counts": [], "png": []}
    for i in range(len(data)):
        image, label = data.load(i)
        pred = torch.from_numpy(predict_labels(m, image, label.shape))
        target = torch.from_numpy(label).long()
        for _ in range(repeats):
            for key, step in (("band", lambda: band_of(label)), ("counts", lambda: confusion(target, pred)),
                              ("counts_and_band_counts", lambda: confusion_in_and_out(target, pred, band)),
                              ("png", lambda: cv2.imencode(".png", pred.numpy(), [cv2.IMWRITE_PNG_COMPRESSION,
                                                                                 KEPT_PNG_COMPRESSION]))):
                t0 = time.perf_counter()
                out = step()
                times[key].append(time.perf_counter() - t0)
                if key == "band":
                    band = torch.from_numpy(out)
    return {k: 1000 * statistics.median(v) for k, v in times.items()}


if __name__ == "__main__":
    main()
