"""Report: the document a stakeholder reads, built from the same figures as these pages."""
import datetime
import tempfile
from pathlib import Path

import streamlit as st

from dashboard import loaders, report, tables, widgets

st.title("Report")
st.caption("One self-contained HTML file (it opens with no network: charts and images inside it) and the same "
           "content as a PDF: the recommendation under the budget below and what it rests on, the leaderboard, "
           "accuracy against cost with the Pareto front, robustness and other streets where measured, deployment "
           "variants, published results beside ours, per-class IoU, side-by-side examples and where every number "
           "comes from. The same as `python -m engine report`.")

df, done = widgets.evaluated_runs_or_stop()
c1, c2, c3 = st.columns([1.2, 2, 1])
with c1:
    dataset = widgets.dataset_picker(done, key="report_dataset")
title = c2.text_input("Title", value="Which segmentation model for our streets", key="report_title")
date = c3.date_input("Date printed on it", value=datetime.date.today(), key="report_date",
                     help="Nothing else in the report depends on when it is built: two reports of one store "
                          "with the same date are identical")
runs = done[done["dataset"] == dataset]
labels = tables.run_labels(runs)
chosen = st.multiselect("Runs", list(labels), default=list(labels), format_func=labels.get, key="report_runs",
                        help="The runs the report shows (derived models with the model they were made from, "
                             "where both are chosen)")
_, y_axes = tables.with_accuracy_axes(runs, loaders.evaluations(loaders.store_url()))
rank_by = st.selectbox("Rank by", list(y_axes), format_func=y_axes.get, key="report_rank_by")
setup = widgets.current_setup()
budget = widgets.budget_inputs(setup, rank_by=rank_by, key="report_budget")
if not chosen:
    st.warning("Choose at least one run.")
    st.stop()

if st.button("Build the report", type="primary", icon=":material/description:"):
    store = loaders.store(loaders.store_url())
    try:
        with st.spinner("Building the report ..."):
            html = report.build_report(store, dataset=dataset, run_ids=sorted(chosen), title=title, budget=budget,
                                       date=date.isoformat())
        st.session_state["report"] = {"html": html.encode(), "pdf": None, "error": None}
        with st.spinner("Printing the PDF in headless Chromium ..."), tempfile.TemporaryDirectory() as tmp:
            st.session_state["report"]["pdf"] = report.write_pdf(html, Path(tmp) / "report.pdf").read_bytes()
    except report.ReportError as e:
        st.session_state.setdefault("report", {"html": None, "pdf": None})["error"] = str(e)

built = st.session_state.get("report")
if built:
    if built.get("error"):
        st.error(built["error"])
    c1, c2, _ = st.columns([1, 1, 2])
    if built.get("html"):
        c1.download_button("Download HTML", built["html"], "report.html", "text/html", icon=":material/download:",
                           key="report_html")
    if built.get("pdf"):
        c2.download_button("Download PDF", built["pdf"], "report.pdf", "application/pdf", icon=":material/download:",
                           key="report_pdf")
    if built.get("html"):
        st.caption(f"HTML {len(built['html']) / 1e6:.1f} MB" + (f", PDF {len(built['pdf']) / 1e6:.1f} MB"
                                                                  if built.get("pdf") else ""))
