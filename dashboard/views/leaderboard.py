"""Leaderboard: every run in the results store with its latest evaluation."""
import streamlit as st

from dashboard import loaders, tables, widgets

st.title("Leaderboard")
st.caption("Every training run in the results store, with its latest evaluation on the validation split. "
           "GFLOPs and latency hold for the setup chosen in the sidebar (device, threads, resolution, batch): one "
           "forward pass at a deployment resolution, never at the size a run was trained at. mPC and rPC: the "
           "mean mIoU under corruptions and its share of the clean mIoU (Robustness page). Deployment variants "
           "(pruned, INT8: `python -m engine compress`) are listed under the model they were made from (↳), with "
           "their change against it (Δ).")

df = widgets.runs_or_stop()
current = widgets.current_setup()
setup, setup_label = (current["setup"], current["label"]) if current else (None, None)
at = f" at {current['resolution']}" if current else ""

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
        m3.metric(f"Fastest{at}", f"{fast['latency_ms']:.0f} ms")
        m3.caption(fast["variant"], help=f"measured on {fast['latency_setup']}")
    if done["size_mb"].notna().any():  # what a device must hold: an INT8 model keeps its parent's parameter count
        small = done.loc[done["size_mb"].idxmin()]
        m4.metric("Smallest", f"{small['size_mb']:.1f} MB")
        m4.caption(small["variant"], help=f"checkpoint size on disk; {small['params_m']:.1f} M parameters")
if set(view["dataset"]) == {"synthetic"}:
    st.caption(":material/info: These runs were trained and evaluated on the built-in synthetic street scenes, "
               "not on Cityscapes.")

if "leaderboard_sort" not in st.session_state:
    st.session_state["leaderboard_sort"] = "miou"
sort_by = st.columns([1, 2])[0].selectbox(
    "Sort by", list(tables.LEADERBOARD_COLUMNS), format_func=tables.sort_label, key="leaderboard_sort",
    help="Derived models stay directly under the model they were made from, sorted the same way among themselves "
         "(the table's own column sorting is off: it would tear them away from their parents).")
view = tables.lineage_view(view, sort_by)
shown = view.drop(columns=["run_id"])
# read-only (disabled) and unsortable: a data editor whose rows may change ("dynamic") sorts nothing; the
# height fits the rows (up to 15) and leaves out the empty row such an editor keeps for adding one
st.data_editor(
    shown, hide_index=True, width="stretch", height=35 * (min(len(shown), 15) + 1) + 3, key="leaderboard_table",
    placeholder="", num_rows="dynamic", disabled=True,
    column_order=list(tables.LEADERBOARD_COLUMNS),
    column_config={
        **{c: st.column_config.Column(label) for c, label in tables.LEADERBOARD_COLUMNS.items()},
        "model": st.column_config.TextColumn("Model", pinned=True,
                                             help="↳: made from the model above it (`python -m engine compress`)"),
        "method": st.column_config.TextColumn("Method", help="trained here, imported (a published checkpoint: "
                                                             "`python -m engine import-checkpoint`), or how it was "
                                                             "made from the model above: prune, int8, or prune+int8"),
        "ratio": st.column_config.NumberColumn("FLOPs pruned", format="percent",
                                               help="the share of the trained model's FLOPs pruned away"),
        "delta_miou": st.column_config.NumberColumn("Δ mIoU", format="%+.3f",
                                                    help="mIoU minus that of the model it was made from"),
        "size_ratio": st.column_config.NumberColumn("Δ size", format="x%.2f",
                                                    help="checkpoint size / that of the model it was made from"),
        "latency_ratio": st.column_config.NumberColumn(
            "Δ latency", format="x%.2f", help="latency / that of the model it was made from (blank when the two "
                                              "were not measured on the same device, threads and resolution)"),
        "miou": st.column_config.ProgressColumn("mIoU", format="%.3f", min_value=0.0, max_value=1.0),
        "pixel_accuracy": st.column_config.NumberColumn("Pixel acc.", format="%.3f"),
        "mpc": st.column_config.NumberColumn("mPC", format="%.3f",
                                             help="mean mIoU under corruptions (`python -m engine robustness`)"),
        "rpc": st.column_config.NumberColumn("rPC", format="%.3f", help="mPC / clean mIoU (1: nothing lost)"),
        "lr": st.column_config.NumberColumn("LR", format="%.0e"),
        "params_m": st.column_config.NumberColumn("Params (M)", format="%.1f"),
        "size_mb": st.column_config.NumberColumn("Size (MB)", format="%.0f"),
        "gflops": st.column_config.NumberColumn(f"GFLOPs{at}", format="%.2f", help="one image"),
        "latency_ms": st.column_config.NumberColumn(f"Latency (ms){at}", format="%.0f",
                                                    help=f"one forward on {setup_label}" if setup_label else None),
        "cost_resolution": st.column_config.TextColumn("GFLOPs/latency at",
                                                       help="the resolution of both figures (sidebar: the setup)"),
        "train_minutes": st.column_config.NumberColumn("Train time (min)", format="%.1f"),
        "images_per_second": st.column_config.NumberColumn("Train img/s", format="%.1f"),
        "started_at": st.column_config.DatetimeColumn("Started", format="YYYY-MM-DD HH:mm"),
        "description": None, "variant": None,
    })

for note in tables.imported_notes([r for r in loaders.leaderboard(loaders.store_url(), setup)
                                  if r["run_id"] in set(view["run_id"])]):
    st.caption(":material/download: " + note)

failed = view[view["status"] == "failed"]
for r in failed.itertuples():
    st.error(f"**{r.variant}** (run {r.uid}) failed: {r.error or 'no error recorded'}")

with st.expander("Recipe of a run"):
    labels = tables.run_labels(view)
    run_id = st.selectbox("Run", list(labels), format_func=labels.get, key="recipe_run")
    row = view[view["run_id"] == run_id].iloc[0]
    if row["description"]:
        st.write(row["description"])
    hp = next(r for r in loaders.leaderboard(loaders.store_url(), setup) if r["run_id"] == run_id)
    st.json(hp["hyperparameters"], expanded=2)

csv = view.drop(columns=["run_id", "model", "depth"]).to_csv(index=False).encode()  # the tree's order, full names
st.download_button("Download this table (CSV)", csv, "leaderboard.csv", "text/csv")

st.subheader("Published results (Cityscapes val, single scale)")
published = tables.published_frame(loaders.published(loaders.store_url()))
if published.empty:
    st.caption("None in the store yet: `python -m engine published --load` loads the papers' and model zoos' figures.")
else:
    st.caption("Figures as the papers, the model zoos and the project's original report give them, not measured here "
               "(so not in the table above, nor in its best, fastest and smallest): the speed of each on its own "
               "device and resolution, the GFLOPs at the input size stated. An empty cell: the source gives no such "
               "figure. Each row links to its source.")
    st.dataframe(
        published, hide_index=True, width="stretch", key="published_table", placeholder="",
        height=35 * (len(published) + 1) + 3,  # every row, no inner scrolling
        column_order=["model", "miou", "params_m", "gflops_label", "fps_label", "schedule", "crop", "url", "source",
                      "backbone", "note"],
        column_config={
            "model": st.column_config.TextColumn("Model", pinned=True),
            "miou": st.column_config.NumberColumn("mIoU", format="%.4f", help="as published, as a fraction"),
            "params_m": st.column_config.NumberColumn("Params (M)", format="%.1f"),
            "gflops_label": st.column_config.TextColumn("GFLOPs", width=130,
                                                        help="at the input size (WxH) the source states"),
            "fps_label": st.column_config.TextColumn("FPS", width=190,
                                                     help="as the source measured it: its device and resolution (WxH)"),
            "schedule": st.column_config.TextColumn("Schedule"), "crop": st.column_config.TextColumn("Crop"),
            "backbone": st.column_config.TextColumn("Backbone"), "source": st.column_config.TextColumn("Source"),
            "url": st.column_config.LinkColumn("Link", display_text="open the source"),
            "note": st.column_config.TextColumn("Note"),
        })
