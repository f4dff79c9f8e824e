"""Trade-offs: mIoU against size, compute, latency and training time; the Pareto front; curves."""
import streamlit as st

from dashboard import charts, loaders, tables, widgets

st.title("Trade-offs")
st.caption("Accuracy against cost. A run is on the Pareto front when no other run is both cheaper on this axis "
           "and more accurate. Click a point to pick that model for the Compare page.")

df, done = widgets.evaluated_runs_or_stop()

c1, c2, c3 = st.columns([2, 2, 1])
with c1:
    dataset = widgets.dataset_picker(done, key="tradeoff_dataset")
x = c2.selectbox("Efficiency axis", list(tables.EFFICIENCY_AXES), format_func=tables.EFFICIENCY_AXES.get,
                 key="tradeoff_axis")
log_x = c3.toggle("Log scale", key="tradeoff_log")
runs = done[done["dataset"] == dataset]
plotted = runs.dropna(subset=[x])
if plotted.empty:
    st.warning(f"No run has a value for {tables.EFFICIENCY_AXES[x]}.")
    st.stop()

event = st.plotly_chart(charts.tradeoff_figure(plotted, x, log_x=log_x), width="stretch",
                        on_select="rerun", selection_mode="points", key="tradeoff_chart")
picked = [int(p["customdata"][0]) for p in (event.selection.points if event else []) if p.get("customdata")]
if picked:
    variants = [plotted.loc[plotted["run_id"] == rid, "variant"].iloc[0] for rid in picked[:2]]
    st.session_state["compare_a"] = variants[0]
    st.session_state.pop("pick_compare_a", None)
    if len(variants) > 1:
        st.session_state["compare_b"] = variants[1]
        st.session_state.pop("pick_compare_b", None)
    st.success(f"Selected for Compare: model A = **{variants[0]}**"
               + (f", model B = **{variants[1]}**" if len(variants) > 1 else ""))
    st.page_link("views/compare.py", label="Open Compare", icon=":material/compare:")

front = charts.pareto_front(plotted, x)
st.markdown(f"**Pareto front** ({tables.EFFICIENCY_AXES[x]}): "
            + " → ".join(f"{r.variant} ({getattr(r, x):.3g}, mIoU {r.miou:.3f})" for r in front.itertuples()))
missing = runs[runs[x].isna()]
if not missing.empty:
    st.caption(f"Not plotted (no {tables.EFFICIENCY_AXES[x]} recorded): {', '.join(missing['variant'])}")

st.subheader("Training curves")
labels = tables.run_labels(df[df["dataset"] == dataset])
default = [rid for rid in runs.sort_values("miou", ascending=False)["run_id"].head(3)]
chosen = st.multiselect("Runs", list(labels), default=default, format_func=labels.get, key="curve_runs")
if chosen:
    frame = tables.epochs_frame({labels[rid]: loaders.epochs(loaders.store_url(), rid) for rid in chosen})
    if frame.empty:
        st.info("These runs have no logged epochs yet.")
    else:
        st.plotly_chart(charts.curves_figure(frame), width="stretch", key="curves_chart")

bench = tables.benchmark_frame(loaders.benchmarks(loaders.store_url(), "video"))
st.subheader("Inference benchmarks")
if bench.empty:
    st.caption("No benchmark recorded yet: `python -m engine bench` measures the fast inference path against a "
               "plain eager fp32 baseline on a synthetic video and records it here.")
else:
    devices = ", ".join(f"{d} ({t} threads)" for d, t in bench[["device", "threads"]].drop_duplicates().itertuples(index=False))
    st.caption(f"`python -m engine bench`: end-to-end video frames per second (decode, model, colour, encode) on "
               f"{devices}, the baseline (eager fp32, one frame at a time) next to each fast-path setup measured. "
               "Agreement: the share of pixels labelled as the baseline labels them.")
    st.plotly_chart(charts.benchmark_figure(bench), width="stretch", key="bench_chart")
    st.dataframe(bench, hide_index=True, width="stretch", key="bench_table",
                 column_config={"speedup": st.column_config.NumberColumn(format="x%.2f"),
                                "model_speedup": st.column_config.NumberColumn(format="x%.2f"),
                                "agreement": st.column_config.NumberColumn(format="percent"),
                                "created_at": st.column_config.DatetimeColumn("measured", format="YYYY-MM-DD HH:mm")})
