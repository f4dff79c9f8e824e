"""How long the Compare page takes to re-draw after a change of view (opacity, classes, mode) with
a 2048x1024 image and two models: the models must not run again, and the target is < 0.3 s.

    python scripts/bench_rerender.py [--size 2048x1024] [--repeats 7] [--json]

Uses the two best trained models in WEIGHTS_DIR / RESULTS_DB (e.g. after `make demo`).
Measures, as medians over `repeats` changes:
  render   the pixel work alone, as the page does it: both models' views drawn at the on-screen size
           (dashboard.media.preview, at most 1460 px wide) and JPEG-encoded for st.image
  rerun    a whole Streamlit script run of the Compare page (Streamlit's AppTest, in process):
           page script, the re-draw, and st.image's encoding of both images; not the browser.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

from dashboard import media  # noqa: E402
from dashboard.video_compare import render_pair  # noqa: E402
from engine.data.synthetic import render_scene  # noqa: E402
from engine.profiling import cpu_name  # noqa: E402

CHANGES = [("alpha", 0.3), ("alpha", 0.7), ("view_mode", "mask"), ("view_mode", "disagreement"),
           ("visible_classes", [0, 1, 2, 8, 10, 11, 13]), ("view_mode", "overlay"), ("alpha", 0.5),
           ("visible_classes", list(range(19)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="2048x1024")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    w, h = (int(v) for v in a.size.split("x"))
    image = render_scene(np.random.default_rng(0), w, h)[0]

    at = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=600)
    at.run()
    at.switch_page("views/compare.py").run()
    at.file_uploader(key="compare_upload").set_value(("bench.png", media.encode_png(image), "image/png")).run()
    if at.exception or at.error or "inference_calls" not in at.session_state:
        sys.exit(f"the Compare page did not show two predictions: {[e.value for e in (*at.exception, *at.error)]}"
                 f" {[i.value for i in at.info]}")
    calls = at.session_state["inference_calls"]
    a_labels, b_labels = (p.preview for p in at.session_state["_predictions"].values())
    screen = media.preview(image)

    render_s, rerun_s = [], []
    for k in range(a.repeats):
        t0 = time.perf_counter()
        for out in render_pair(screen, a_labels, b_labels, ["overlay", "mask", "disagreement"][k % 3], 0.5,
                               range(0, 19, 2)):
            media.encode_jpeg(out)
        render_s.append(time.perf_counter() - t0)
    for k in range(a.repeats):
        key, value = CHANGES[k % len(CHANGES)]
        widget = {"alpha": at.slider, "view_mode": at.radio, "visible_classes": at.multiselect}[key](key=key)
        t0 = time.perf_counter()
        widget.set_value(value).run()
        rerun_s.append(time.perf_counter() - t0)
        assert not at.exception and len(at.get("image")) == 2
    assert at.session_state["inference_calls"] == calls, "a view change re-ran a model"

    out = {"size": a.size, "repeats": a.repeats, "render_ms": statistics.median(render_s) * 1000,
           "rerun_ms": statistics.median(rerun_s) * 1000, "rerun_max_ms": max(rerun_s) * 1000,
           "models": [m for m in (at.selectbox(key="pick_compare_a").value, at.selectbox(key="pick_compare_b").value)],
           "model_runs_during_changes": at.session_state["inference_calls"] - calls,
           "device": cpu_name(), "cpu_count": os.cpu_count(),
           "torch_threads": torch.get_num_threads()}
    if a.json:
        print(json.dumps(out))
    else:
        print(f"{a.size}, two models ({', '.join(out['models'])}) on {out['device']} ({out['cpu_count']} cores)")
        print(f"  re-draw of both views (pixels + JPEG):   median {out['render_ms']:.0f} ms")
        print(f"  whole Compare page re-run after a change: median {out['rerun_ms']:.0f} ms, "
              f"max {out['rerun_max_ms']:.0f} ms over {a.repeats} changes; model runs: 0")


if __name__ == "__main__":
    main()
