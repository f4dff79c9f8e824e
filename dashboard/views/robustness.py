"""Robustness: mIoU under corruptions (mPC, rPC, per group, per class) and on other datasets and conditions."""
import streamlit as st

from dashboard import charts, loaders, tables, widgets

st.title("Robustness")
st.caption("How much accuracy each model keeps on corrupted images (noise, blur, weather and digital corruptions "
           "at five severities: the ImageNet-C / Cityscapes-C protocol) and on other streets (other datasets and "
           "conditions such as fog or night). One dataset and condition per chart.")

_, done = widgets.evaluated_runs_or_stop()
dataset = widgets.dataset_picker(done, key="robustness_dataset")
runs = done[done["dataset"] == dataset]
labels = tables.run_labels(runs)
url = loaders.store_url()
example = runs["variant"].iloc[0]
sweeps = loaders.robustness(url, tuple(labels))


def _joined(values) -> str:
    return "; ".join(str(v) for v in dict.fromkeys(values))


def corruption_section() -> None:
    st.subheader("Corruptions")
    if not sweeps:
        st.info(f"No corruption sweep of these runs yet. Fill this section with "
                f"`python -m engine robustness --variant {example}` (the 15 benchmark corruptions at severities 1-5), "
                f"once per variant; for a quick look add `--corruptions gaussian_noise,motion_blur,fog,contrast "
                f"--severities 1,3,5 --limit 50`.")
        return
    targets = tables.sweep_targets(sweeps, labels, dataset)
    target = targets[0]
    if len(targets) > 1:
        target = st.selectbox("Corrupted images from", targets, key="robustness_target",
                              format_func=lambda p: tables.domain_label(*p)
                              + (" (the training dataset)" if p == (dataset, "") else ""))
    swept = [w["run_id"] for w in tables.latest_sweeps(sweeps, labels, *target)]
    chosen = st.multiselect("Runs", swept, default=swept, format_func=labels.get, key="robustness_runs")
    latest = tables.latest_sweeps(sweeps, {r: labels[r] for r in chosen}, *target)
    if not latest:
        st.info("Pick at least one run.")
        return
    summary = tables.robustness_summary(latest, labels)
    colors = charts.run_colors(summary["run"])
    where = tables.domain_label(*target)

    m1, m2, m3 = st.columns(3)
    if summary["mpc"].notna().any():
        best = summary.loc[summary["mpc"].idxmax()]
        m1.metric("Best mPC", f"{best['mpc']:.3f}", help="mean mIoU over the corruptions and severities swept")
        m1.caption(best["run"])
    if summary["rpc"].notna().any():
        best = summary.loc[summary["rpc"].idxmax()]
        m2.metric("Best rPC", f"{best['rpc']:.1%}", help="mPC / clean mIoU: the share of its accuracy a model keeps")
        m2.caption(best["run"])
    m3.metric("Corruptions × severities", f"{summary['corruptions'].iloc[0].count(',') + 1} × "
              f"{summary['severities'].iloc[0].count(',') + 1}")
    images = f"{_joined(summary['num_images'])} {_joined(summary['split'])} image" + (
        "" if set(summary["num_images"]) == {1} else "s")
    m3.caption(f"on {images} of {where}")
    if summary["corruptions"].nunique() > 1 or summary["severities"].nunique() > 1:
        st.warning("These runs were swept over different corruptions or severities, so their mPC and rPC are not "
                   "comparable: sweep them again with the same `--corruptions` and `--severities`.")

    st.plotly_chart(charts.mpc_figure(summary, colors), width="stretch", key="robustness_mpc")

    st.markdown("**mIoU against severity**, one panel per corruption (severity 0: the clean images)")
    curves = tables.severity_curves(latest, labels)
    st.plotly_chart(charts.severity_figure(curves, colors), width="stretch", key="robustness_severity")

    st.markdown("**Retention per corruption group**: the group's mean mIoU / the clean mIoU")
    retention = tables.group_retention(latest, labels)
    st.plotly_chart(charts.group_retention_figure(retention, colors), width="stretch", key="robustness_groups")

    st.markdown("**Retention per class**: each class's IoU under corruption (mean over the corruptions and "
                "severities) / its clean IoU. Red: the classes that break first.")
    c1, c2 = st.columns([1, 2])
    rows = c1.radio("Rows", ["runs", "groups"], horizontal=True, key="robustness_class_rows",
                    format_func={"runs": "one per run", "groups": "one per group, for one run"}.get)
    if rows == "groups":
        run = c2.selectbox("Run", [w["run_id"] for w in latest], format_func=labels.get, key="robustness_class_run")
        matrix = tables.class_retention_by_group(next(w for w in latest if w["run_id"] == run))
    else:
        matrix = tables.class_retention_by_run(latest, labels)
    st.plotly_chart(charts.class_retention_heatmap(matrix), width="stretch", key="robustness_classes")
    weakest = tables.weakest_classes(matrix)
    st.caption("Break first: " + " · ".join(
        f"{row}: " + ", ".join(f"{c} ({v:.0%})" for c, v in classes) for row, classes in weakest.items() if classes))

    with st.expander("Tables"):
        st.dataframe(summary.drop(columns=["run_id", "robustness_id"]), hide_index=True, width="stretch",
                     key="robustness_table",
                     column_config={"clean_miou": st.column_config.NumberColumn("clean mIoU", format="%.3f"),
                                    "mpc": st.column_config.NumberColumn("mPC", format="%.3f"),
                                    "rpc": st.column_config.NumberColumn("rPC", format="%.3f"),
                                    **{g: st.column_config.NumberColumn(g, format="%.3f") for g in tables.GROUPS},
                                    "created_at": st.column_config.DatetimeColumn("swept", format="YYYY-MM-DD HH:mm")})
        st.dataframe(matrix.style.format("{:.1%}", na_rep="–"), width="stretch")
        st.download_button("Download mIoU per corruption and severity (CSV)",
                           curves.drop(columns=["run_id"]).to_csv(index=False).encode(), "robustness.csv",
                           "text/csv", key="dl_robustness")

    st.caption(f"Latest sweep of each run, by `python -m engine robustness` with {_joined(summary['library'])}: "
               f"{_joined(summary['corruptions'])} at severities {_joined(summary['severities'])}, on "
               f"{images} of {where} (model input "
               f"{_joined(summary['eval_size'])}); each corruption applied at the image's full resolution with a "
               f"fixed seed per image, labels untouched. mPC: the mean mIoU over the benchmark corruptions and "
               f"severities swept (over every one swept when none is a benchmark one); rPC = mPC / clean mIoU "
               f"(Michaelis et al. 2019). Sweep again with `python -m engine robustness --variant {example}`.")


def domain_section() -> None:
    st.subheader("Other datasets and conditions")
    frame = tables.domain_shift_frame(loaders.evaluations(url), labels, dataset)
    other = set(frame.loc[~frame["in_distribution"], "run_id"]) if not frame.empty else set()
    hint = (f"`python -m engine evaluate --variant {example} --dataset acdc --condition all` evaluates a model on "
            f"ACDC's fog, night, rain and snow (also `--dataset bdd100k`, `kitti` or `folder`; without the dataset's "
            f"variable, on its synthetic copy).")
    if not other:
        st.info(f"These runs were evaluated on {dataset} only. {hint}")
        return
    frame = frame[frame["run_id"].isin(other)]
    st.plotly_chart(charts.domain_shift_figure(frame), width="stretch", key="robustness_domains")
    matrix = tables.domain_shift_matrix(frame)
    st.dataframe(matrix.style.format("{:.3f}", na_rep="–"), width="stretch", key="robustness_domain_table")
    mixed = [labels[r] for r, g in frame.groupby("run_id")
             if g["checkpoint_sha256"].dropna().nunique() > 1]
    if mixed:
        st.warning(f"Evaluated from different checkpoint files (a retrained best.pt?): {', '.join(mixed)}")
    st.caption(f"The latest evaluation of each run on each dataset and condition (the same checkpoint, the "
               f"training dataset {dataset} first); a blank: not evaluated there. {hint}")


corruption_section()
domain_section()
