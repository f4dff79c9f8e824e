"""`python -m engine demo`: synthetic scenes -> every variant trained and evaluated (quick profile,
predictions kept for the Drill-down page),
swept through a few corruptions and evaluated on the synthetic ACDC conditions -> a pruned and an
INT8 version of one DeepLabV3 and one HRNet variant -> leaderboard -> the dashboard (when present)."""
from __future__ import annotations

import subprocess
import sys
import time
import traceback

from engine import published, settings
from engine.compress import compress
from engine.config import list_variants, load_recipe
from engine.data import ACDC_CONDITIONS, synthetic_layouts
from engine.data.synthetic import DEFAULT_SCENES, ensure_synthetic_dataset
from engine.evaluate import evaluate_loaded, load_checkpoint, most_frequent_class_miou
from engine.leaderboard import format_leaderboard
from engine.robustness import sweep_loaded
from engine.store import Store
from engine.train import train

DEMO_DATA = DEFAULT_SCENES
# deployment variants (`compress`): one DeepLabV3 and one HRNet, each pruned (half the FLOPs, briefly
# fine-tuned) and quantized to INT8
DEMO_COMPRESS = ("deeplabv3_r50_adam", "hrnetv2_w48_adamw")
DEMO_COMPRESS_SETTINGS = dict(ratios=[0.5], finetune_iters=12, calibration_images=8)
# two corruptions of each benchmark group at two severities, on the val scenes (the cache makes the
# corrupting a one-time cost: every variant after the first reads the corrupted images back)
DEMO_SWEEP = dict(corruptions=["gaussian_noise", "shot_noise", "defocus_blur", "motion_blur", "fog", "snow",
                               "contrast", "jpeg_compression"], severities=[2, 4])


def _other_streets(m, *, store, acdc_root) -> str:
    """The demo's robustness figures for one trained, loaded variant: the corruption sweep and the
    synthetic ACDC conditions, recorded in the store; returns the line it prints."""
    sweep = sweep_loaded(m, data_root=settings.SYNTHETIC_ROOT, store=store, progress=False, **DEMO_SWEEP)
    acdc = {c: evaluate_loaded(m, dataset="acdc", data_root=acdc_root, condition=c, store=store,
                               progress=False)["miou"] for c in ACDC_CONDITIONS}
    return (f"   mPC {sweep['mpc']:.4f} (rPC {sweep['rpc']:.2f}); synthetic ACDC "
            + ", ".join(f"{c} {v:.4f}" for c, v in acdc.items()))


def run_demo(*, db=None, weights_dir=None, device="auto", variants=None, dashboard=True, profile="quick") -> int:
    t0 = time.perf_counter()
    root = settings.SYNTHETIC_ROOT
    ensure_synthetic_dataset(root, **DEMO_DATA)
    acdc_root = settings.synthetic_root("acdc")
    synthetic_layouts.ensure_layout("acdc", acdc_root, **DEMO_DATA)
    store = Store(db)
    failed, run_ids = [], set()
    for name in variants or list_variants():
        t = time.perf_counter()
        print(f"== {name} ({profile}) ==", flush=True)
        try:
            recipe = load_recipe(name, profile)
            run_ids.add(train(recipe, store=store, data_root=root, device=device, weights_dir=weights_dir,
                              progress=False).run_id)
            m = load_checkpoint(variant=name, weights_dir=weights_dir, store=store, device=device)
            res = evaluate_loaded(m, data_root=root, store=store, keep_predictions=True, progress=False)
            print(f"   val mIoU {res['miou']:.4f}  ({time.perf_counter() - t:.0f}s)", flush=True)
            print(_other_streets(m, store=store, acdc_root=acdc_root) + f"  ({time.perf_counter() - t:.0f}s)",
                  flush=True)
        except Exception:  # recorded as failed in the store by train(); keep going with the others
            traceback.print_exc()
            failed.append(name)
    for name in [v for v in DEMO_COMPRESS if v in (variants or list_variants()) and v not in failed]:
        t = time.perf_counter()
        print(f"== deployment variants of {name} ==", flush=True)
        try:
            for method in ("prune", "int8"):
                for res in compress(variant=name, method=method, store=store, data_root=root, device=device,
                                    weights_dir=weights_dir, progress=False, **DEMO_COMPRESS_SETTINGS):
                    run_ids.add(res["run_id"])
                    print(f"   {res['name']}: val mIoU {res['miou']:.4f}, {res['size_mb']:.1f} MB, "
                          f"{res['gflops']:.2f} GFLOPs and {res['latency_ms']:.0f} ms at {res['resolution']}  "
                          f"({time.perf_counter() - t:.0f}s)", flush=True)
        except Exception:
            traceback.print_exc()
            failed.append(f"{name} (compress)")
    published.load(store)  # the papers' Cityscapes figures, beside ours on the dashboard (never mixed in)
    baseline = most_frequent_class_miou(root, "val")
    rows = [r for r in store.leaderboard(dataset="synthetic") if r["run_id"] in run_ids]
    print()
    print(format_leaderboard(rows))
    below = [r["variant"] for r in rows if r["miou"] is None or r["miou"] <= baseline]
    print(f"\nmost-frequent-class baseline on synthetic val: mIoU {baseline:.4f}; "
          + (f"NOT beaten by: {', '.join(below)}" if below else f"all {len(rows)} variants beat it"))
    print(f"demo finished in {time.perf_counter() - t0:.0f}s; results in {store.url}")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    app = settings.REPO_ROOT / "dashboard" / "app.py"
    if dashboard and app.is_file():
        print("starting the dashboard (Ctrl-C to stop) ...", flush=True)
        return subprocess.call([sys.executable, "-m", "streamlit", "run", str(app)])
    return 0
