"""Leaderboard: every run in the results store with its latest evaluation."""
import streamlit as st

from dashboard import loaders, tables, widgets

st.title("Leaderboard")
st.caption("Every training run in the results store, with its latest evaluation on the validation split. "
           "Latency is one forward pass of one image, measured where the run was evaluated. mPC and rPC: the "
           "mean mIoU under corruptions and its share of the clean mIoU (Robustness page).")

df = widgets.runs_or_stop()

c1, c2, c3 = st.columns(3)
datasets = c1.multiselect("Dataset", sorted(df["dataset"].unique()), placeholder="all datasets")
archs = c2.multiselect("Architecture", sorted(df["arch"].unique()), placeholder="all architectures")
statuses = c3.multiselect("Status", sorted(df["status"].unique()), placeholder="all statuses")
view = tables.filter_runs(df, datasets=datasets, archs=archs, statuses=statuses)
if view.empty:
    st.warning("No run matches these filters.")
    st.stop()

done = tables.evaluated(view)
m1, m2, m3, m4 = st.columns(4)
m1.metric("Runs", len(view))
m1.caption(" · ".join(f"{n} {status}" for status, n in view["status"].value_counts().items()))
if not done.empty:
    best = done.loc[done["miou"].idxmax()]
    m2.metric("Best mIoU", f"{best['miou']:.3f}", help=best["variant"])
    m2.caption(best["variant"])
    if done["latency_ms"].notna().any():
        fast = done.loc[done["latency_ms"].idxmin()]
        m3.metric("Fastest", f"{fast['latency_ms']:.0f} ms")
        m3.caption(fast["variant"], help=f"measured on {fast['latency_setup']}")
    if done["params_m"].notna().any():
        small = done.loc[done["params_m"].idxmin()]
        m4.metric("Smallest", f"{small['params_m']:.1f} M params")
        m4.caption(small["variant"])
if set(view["dataset"]) == {"synthetic"}:
    st.caption(":material/info: These runs were trained and evaluated on the built-in synthetic street scenes, "
               "not on Cityscapes.")

shown = view.drop(columns=["run_id"])
st.dataframe(
    shown, hide_index=True, width="stretch", key="leaderboard_table",
    column_order=list(tables.LEADERBOARD_COLUMNS),
    column_config={
        **{c: st.column_config.Column(label) for c, label in tables.LEADERBOARD_COLUMNS.items()},
        "miou": st.column_config.ProgressColumn("mIoU", format="%.3f", min_value=0.0, max_value=1.0),
        "pixel_accuracy": st.column_config.NumberColumn("Pixel acc.", format="%.3f"),
        "mpc": st.column_config.NumberColumn("mPC", format="%.3f",
                                             help="mean mIoU under corruptions (`python -m engine robustness`)"),
        "rpc": st.column_config.NumberColumn("rPC", format="%.3f", help="mPC / clean mIoU (1: nothing lost)"),
        "lr": st.column_config.NumberColumn("LR", format="%.0e"),
        "params_m": st.column_config.NumberColumn("Params (M)", format="%.1f"),
        "size_mb": st.column_config.NumberColumn("Size (MB)", format="%.0f"),
        "gflops": st.column_config.NumberColumn("GFLOPs", format="%.2f"),
        "latency_ms": st.column_config.NumberColumn("Latency (ms)", format="%.0f"),
        "train_minutes": st.column_config.NumberColumn("Train time (min)", format="%.1f"),
        "images_per_second": st.column_config.NumberColumn("Train img/s", format="%.1f"),
        "started_at": st.column_config.DatetimeColumn("Started", format="YYYY-MM-DD HH:mm"),
        "description": None,
    })

failed = view[view["status"] == "failed"]
for r in failed.itertuples():
    st.error(f"**{r.variant}** (run {r.uid}) failed: {r.error or 'no error recorded'}")

with st.expander("Recipe of a run"):
    labels = tables.run_labels(view)
    run_id = st.selectbox("Run", list(labels), format_func=labels.get, key="recipe_run")
    row = view[view["run_id"] == run_id].iloc[0]
    if row["description"]:
        st.write(row["description"])
    hp = next(r for r in loaders.leaderboard(loaders.store_url()) if r["run_id"] == run_id)
    st.json(hp["hyperparameters"], expanded=2)

st.download_button("Download this table (CSV)", view.drop(columns=["run_id"]).to_csv(index=False).encode(),
                   "leaderboard.csv", "text/csv")
