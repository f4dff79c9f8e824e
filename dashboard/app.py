"""segbench dashboard: `streamlit run dashboard/app.py` (or `make dashboard`).

Reads the results store (RESULTS_DB) and the weights folder (WEIGHTS_DIR), and runs models
only through `engine.inference`.
"""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `streamlit run` puts only this file's folder on the path
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from dashboard import loaders, media, widgets  # noqa: E402

# The browser tab's icon: a street scene's classes in their Cityscapes colours (sky, building, vegetation, road),
# drawn here: a Material icon as page_icon makes the browser fetch it from fonts.gstatic.com, and the app is offline.
st.set_page_config(page_title="segbench: segmentation models compared", page_icon=media.app_icon(), layout="wide")

PAGES = [
    st.Page("views/leaderboard.py", title="Leaderboard", icon=":material/leaderboard:", default=True),
    st.Page("views/tradeoffs.py", title="Trade-offs", icon=":material/scatter_plot:"),
    st.Page("views/report.py", title="Report", icon=":material/description:"),
    st.Page("views/per_class.py", title="Per-class", icon=":material/grid_on:"),
    st.Page("views/robustness.py", title="Robustness", icon=":material/thunderstorm:"),
    st.Page("views/compare.py", title="Compare", icon=":material/compare:"),
    st.Page("views/drilldown.py", title="Drill-down", icon=":material/zoom_in:"),
    st.Page("views/coverage.py", title="Coverage", icon=":material/pie_chart:"),
]
page = st.navigation(PAGES)

with st.sidebar:
    st.markdown("### :material/location_city: segbench")
    st.caption("Semantic segmentation models for urban street scenes, compared on accuracy, size, speed and cost.")
    st.caption(f"Results store: `{widgets.shown_url(loaders.store_url())}`  \nWeights: `{loaders.weights_dir()}`")
    widgets.setup_picker()
    widgets.backend_picker()
    if st.button("Reload results", help="Read the results store again (it is re-read every few seconds anyway)"):
        st.cache_data.clear()

page.run()
