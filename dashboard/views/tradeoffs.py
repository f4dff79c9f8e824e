"""Trade-offs: mIoU against size, compute, latency and training time; the Pareto front; curves."""
import pandas as pd
import streamlit as st

from dashboard import charts, loaders, tables, widgets

st.title("Trade-offs")
st.caption("Accuracy against cost. A run is on the Pareto front when no other run is both cheaper on this axis "
           "and more accurate on the chosen accuracy axis (clean mIoU, mPC under corruptions, or the mIoU on "
           "another dataset). GFLOPs and latency hold for the setup chosen in the sidebar. Deployment variants "
           "(pruned, INT8) are drawn with their own marker and joined to the model they were made from. Click a "
           "point to pick that model for the Compare page.")

df, done = widgets.evaluated_runs_or_stop()

c1, c2, c3, c4 = st.columns([2, 2, 2, 1.7])
with c1:
    dataset = widgets.dataset_picker(done, key="tradeoff_dataset")
runs, y_axes = tables.with_accuracy_axes(done[done["dataset"] == dataset], loaders.evaluations(loaders.store_url()))
y = c2.selectbox("Accuracy axis", list(y_axes), format_func=y_axes.get, key="tradeoff_y",
                 help="Clean mIoU on the validation split; mPC, the mean mIoU under corruptions (Robustness page); "
                      "or the mIoU on another dataset or condition the runs were evaluated on")
setup = widgets.current_setup()
x = c3.selectbox("Efficiency axis", list(tables.EFFICIENCY_AXES), format_func=tables.EFFICIENCY_AXES.get,
                 key="tradeoff_axis")
x_label = tables.axis_label(x, setup)
log_x = c4.toggle("Log scale", key="tradeoff_log")
show_published = c4.toggle("Show published results", value=True, key="tradeoff_published")  # hollow markers
budget = widgets.budget_inputs(setup, rank_by=y)
answer = widgets.recommendation(budget, dataset)

plotted = runs.dropna(subset=[x, y])
if plotted.empty:
    fill = (f"`python -m engine robustness --variant {runs['variant'].iloc[0]}` measures it" if y == "mpc" else
            "evaluate the runs there with `python -m engine evaluate`")
    st.warning(f"No run has both {x_label} and {y_axes[y]}: {fill}.")
    st.stop()

published = tables.published_frame(loaders.published(loaders.store_url())) if show_published else None
resolution = setup["resolution"] if setup else None
overlay = tables.published_on_axis(published, x, resolution) if published is not None and y == "miou" else None
figure = charts.tradeoff_figure(plotted, x, y=y, y_label=y_axes[y], log_x=log_x, published=overlay, x_label=x_label,
                                recommended=answer.ranked[0]["run_id"] if answer and answer.ranked else None)
event = st.plotly_chart(figure, width="stretch", on_select="rerun", selection_mode="points", key="tradeoff_chart")
if published is not None:
    st.caption(tables.published_caption(published, overlay, x, y, dataset, resolution))
picked = list(dict.fromkeys(int(p["customdata"][0]) for p in (event.selection.points if event else [])
                            if p.get("customdata")))  # a line's end and its point are the same run
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

if x in ("params_m", "gflops") and plotted["method"].str.contains("int8").any():
    st.caption(":material/info: An INT8 model keeps the parameters and the (float) GFLOPs of the model it was made "
               "from, so on this axis it sits straight above or below it: checkpoint size and latency show what INT8 "
               "saves.")
front = charts.pareto_front(plotted, x, y)
short = {"miou": "mIoU", "mpc": "mPC"}.get(y, y_axes[y])
st.markdown(f"**Pareto front** ({tables.EFFICIENCY_AXES[x]}, {y_axes[y]}): "
            + " → ".join(f"{r['variant']} ({r[x]:.3g}, {short} {r[y]:.3f})" for _, r in front.iterrows()))
missing = runs[runs[x].isna() | runs[y].isna()]
if not missing.empty:
    why = [f"{r['variant']} (no " + " and no ".join(n for n, v in ((x_label, r[x]), (short, r[y]))
                                                    if pd.isna(v)) + ")" for _, r in missing.iterrows()]
    st.caption(f"Not plotted: {', '.join(why)}")

if answer is not None:
    with st.expander(f"The budget's answer: {len(answer.ranked)} models meet it, {len(answer.excluded)} excluded"):
        if answer.ranked:
            st.dataframe(tables.budget_frame(answer.ranked), hide_index=True, width="stretch", key="budget_ranked",
                         column_config={"name": "Model", "method": "Method", "accuracy": y_axes[y],
                                        "miou": "Clean mIoU", "rpc": "rPC", "size_mb": "Size (MB)",
                                        "gflops": tables.axis_label("gflops", setup),
                                        "latency_ms": tables.axis_label("latency_ms", setup),
                                        "latency_precision": "Precision"})
        if answer.excluded:
            st.markdown("**Excluded**, each with the first limit it breaks (or what is not measured):")
            st.dataframe(tables.budget_frame(answer.excluded), hide_index=True, width="stretch", key="budget_excluded",
                         column_order=["name", "method", "reason"],
                         column_config={"name": "Model", "method": "Method", "reason": "Why not"})
        if answer.published:
            st.caption("Published results are never ranked with the runs (not measured here): "
                       + "; ".join(f"{p['name']} mIoU {p['miou']:.3f}" for p in answer.published[:6])
                       + (" …" if len(answer.published) > 6 else "") + " (Leaderboard: all of them, with sources).")

st.subheader("Training curves")
labels = tables.run_labels(df[df["dataset"] == dataset])
trained = runs[runs["parent_run_id"].isna()]  # derived models log no epochs of their own (or only a fine-tune)
default = [rid for rid in trained.sort_values("miou", ascending=False)["run_id"].head(3)]
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
