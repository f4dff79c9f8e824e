"""`python -m engine demo`: synthetic scenes -> every variant trained and evaluated (quick profile)
-> leaderboard -> the dashboard (when present)."""
from __future__ import annotations

import subprocess
import sys
import time
import traceback

from engine import settings
from engine.config import list_variants, load_recipe
from engine.data.synthetic import DEFAULT_SCENES, ensure_synthetic_dataset
from engine.evaluate import evaluate_checkpoint, most_frequent_class_miou
from engine.leaderboard import format_leaderboard
from engine.store import Store
from engine.train import train

DEMO_DATA = DEFAULT_SCENES


def run_demo(*, db=None, weights_dir=None, device="auto", variants=None, dashboard=True, profile="quick") -> int:
    t0 = time.perf_counter()
    root = settings.SYNTHETIC_ROOT
    ensure_synthetic_dataset(root, **DEMO_DATA)
    store = Store(db)
    failed, run_ids = [], set()
    for name in variants or list_variants():
        t = time.perf_counter()
        print(f"== {name} ({profile}) ==", flush=True)
        try:
            recipe = load_recipe(name, profile)
            run_ids.add(train(recipe, store=store, data_root=root, device=device, weights_dir=weights_dir,
                              progress=False).run_id)
            res = evaluate_checkpoint(variant=name, data_root=root, device=device, store=store,
                                      weights_dir=weights_dir, progress=False)
            print(f"   val mIoU {res['miou']:.4f}  ({time.perf_counter() - t:.0f}s)", flush=True)
        except Exception:  # recorded as failed in the store by train(); keep going with the others
            traceback.print_exc()
            failed.append(name)
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
