"""Drill-down: where exactly one model beats another, from the per-image rows of their evaluations."""
import numpy as np
import pandas as pd
import streamlit as st

from dashboard import charts, loaders, media, tables, widgets
from engine import per_image, render
from engine.classes import CLASS_NAMES
from engine.errors import UserError

st.title("Drill-down")
st.caption("Every evaluation records each image's confusion counts, over all its pixels and within a band around "
           "the ground truth's boundaries (trimap: pixels within 1% of the image diagonal of an edge, 23 px on a "
           "2048x1024 frame). Pick one evaluation, or two of the same images, and find where and why they differ.")

url = loaders.store_url()
widgets.runs_or_stop()
evaluations = [e for e in loaders.evaluations(url) if e["images"]]
if not evaluations:
    st.info("No evaluation with per-image results yet: `python -m engine evaluate --variant NAME` records one "
            "(add `--keep-predictions` to keep each image's prediction too).")
    st.stop()

by_id = {e["id"]: e for e in evaluations}
newest_first = [e["id"] for e in reversed(evaluations)]
c1, c2 = st.columns(2)
id_a = c1.selectbox("Evaluation A", newest_first, key="drill_a", format_func=lambda i: tables.evaluation_label(by_id[i]))
ev_a = by_id[id_a]
others = [e["id"] for e in reversed(tables.comparable(evaluations, ev_a))]
if st.session_state.get("drill_b") not in [None, *others]:
    st.session_state["drill_b"] = None
id_b = c2.selectbox("Evaluation B (same images)", [None, *others], key="drill_b",
                    format_func=lambda i: "none: look at A alone" if i is None else tables.evaluation_label(by_id[i]),
                    help="Evaluations on the same dataset, condition and split as A")
ev_b = by_id.get(id_b)
rows = {"A": loaders.image_results(url, ev_a["id"])}
if ev_b is not None:
    rows["B"] = loaders.image_results(url, ev_b["id"])
names = {"A": ev_a["variant"], "B": ev_b["variant"] if ev_b else None}
for key in ("drill_matrix_of", "drill_gallery_of"):  # A at first, and when B (or B − A) was chosen and B taken away
    if st.session_state.get(key) not in ("A", *(("B", "B − A") if ev_b else ())):
        st.session_state[key] = "A"
st.session_state.setdefault("drill_scatter_by", "miou")


def open_image(stem: str) -> None:
    st.session_state["drill_image"] = stem
    st.session_state["drill_tab"] = "Image"


def on_cell() -> None:
    points = st.session_state["drill_matrix"].selection.points
    if points:  # the marker of cell (ground truth, prediction) sits at x = prediction, y = ground truth
        st.session_state["drill_cell"] = (int(points[0]["y"]), int(points[0]["x"]))


def on_point() -> None:
    points = st.session_state["drill_scatter"].selection.points
    if points:
        open_image(points[0]["customdata"])


def on_row(key: str, frame: pd.DataFrame) -> None:
    picked = st.session_state[key].selection.rows
    if picked:
        open_image(frame["image"].iloc[picked[0]])


overview, gallery, image_tab = st.tabs(["Overview", "Worst images", "Image"], key="drill_tab", on_change="rerun")

# ---- overview: confusion matrix, A against B per image, interior vs boundary ----
if overview.open:
    with overview:
        st.subheader("Confusion matrix")
        m1, m2 = st.columns([2, 1], vertical_alignment="bottom")
        shown = m1.segmented_control("Matrix of", ["A", "B", "B − A"] if ev_b else ["A"],
                                     key="drill_matrix_of", required=True)
        hide = m2.toggle("Hide the diagonal", key="drill_hide_diag", help="Show only the confusions")
        counts = {k: np.asarray(ev["confusion"]) for k, ev in (("A", ev_a), ("B", ev_b)) if ev is not None}
        if shown == "B − A":
            shares = per_image.row_normalised(counts["B"]) - per_image.row_normalised(counts["A"])
            fig = charts.confusion_figure(shares, counts["B"] - counts["A"], hide_diagonal=hide, diverging=True)
        else:
            fig = charts.confusion_figure(per_image.row_normalised(counts[shown]), counts[shown], hide_diagonal=hide)
        st.caption("Rows: ground truth; columns: prediction; each row as shares of that class's pixels. Click a cell "
                   "to list the images where that confusion covers the most pixels.")
        st.plotly_chart(fig, width="stretch", key="drill_matrix", on_select=on_cell, selection_mode="points")
        cell = st.session_state.get("drill_cell")
        if cell:
            gt, pred = cell
            first = "B" if shown == "B" else "A"
            ordered = {first: rows[first], **{k: v for k, v in rows.items() if k != first}}
            found = tables.cell_images_frame(ordered, gt, pred)
            st.markdown(f"**Ground truth {CLASS_NAMES[gt]} predicted as {CLASS_NAMES[pred]}**: the images where "
                        f"{first} does it on the most pixels (select a row to open the image)")
            if found.empty:
                st.caption(f"{first} never predicts {CLASS_NAMES[pred]} on {CLASS_NAMES[gt]} pixels.")
            else:
                st.dataframe(found, hide_index=True, key="drill_cell_rows", on_select=lambda: on_row("drill_cell_rows", found),
                             selection_mode="single-row", column_config={
                                 f"{first} share": st.column_config.NumberColumn(format="percent")})

        if ev_b is not None:
            st.subheader("Per image: A against B")
            measure = st.segmented_control("Measure", ["miou", "boundary"], required=True,
                                           key="drill_scatter_by", format_func=per_image.measure_label)
            pairs = tables.image_pairs(rows["A"], rows["B"], measure)
            st.caption(f"One point per image; above the diagonal B ({names['B']}) does better. Click a point to open "
                       "the image.")
            st.plotly_chart(charts.image_scatter(pairs, names["A"], names["B"], per_image.measure_label(measure)),
                            width="stretch", key="drill_scatter", on_select=on_point, selection_mode="points")

        st.subheader("Interior and boundary IoU per class")
        d = {r["boundary_px"] for r in rows["A"]}
        st.caption(f"A: {names['A']}" + (f", B: {names['B']}" if ev_b else "") + ". IoU over all pixels, in the "
                   "interior and within the boundary band (d = "
                   + ", ".join(f"{v} px" for v in sorted(d)) + " at the ground truth's resolution). A class the "
                   "band covers entirely (thin poles, distant signs) has no interior IoU.")
        frame = tables.interior_boundary_frame({"A": ev_a, **({"B": ev_b} if ev_b else {})})
        st.dataframe(frame, width="stretch", key="drill_boundary_table", placeholder="–", column_config={
            c: st.column_config.NumberColumn(format="%+.3f" if c.startswith("B − A") else "%.3f") for c in frame})

# ---- worst-K gallery ----
if gallery.open:
    with gallery:
        g1, g2, g3, g4 = st.columns([3, 2, 2, 1], vertical_alignment="bottom")
        side = g1.segmented_control("Model", list(rows), required=True, key="drill_gallery_of",
                                    format_func=lambda k: f"{k}: {names[k]}")
        kind = g2.selectbox("Measure", ["miou", "boundary", "class"], key="drill_gallery_by",
                            format_func=lambda m: "class IoU" if m == "class" else per_image.measure_label(m))
        by = kind
        if kind == "class":
            by = "class:" + g3.selectbox("Class", CLASS_NAMES, key="drill_gallery_class")
        k = g4.number_input("Images", 1, 48, 8, key="drill_gallery_k")
        ev = ev_b if side == "B" else ev_a
        worst = per_image.worst(rows[side], by, int(k))
        kept = bool(ev.get("predictions_dir"))
        st.caption(f"The {len(worst)} images where {side} ({names[side]}) scores lowest"
                   + (", its wrong pixels in the colour of what it predicted (kept predictions)." if kept else
                      ". With `evaluate --keep-predictions` its errors would show on each image."))
        if not worst:
            st.info("No image has this measure (the class is in none of them).")
        cols = st.columns(4)
        for i, r in enumerate(worst):
            with cols[i % 4]:
                try:
                    img, truth = loaders.evaluated_image(ev, r["image"])
                    if kept:
                        labels = loaders.evaluated_prediction(ev, r["image"], img, truth.shape).labels
                        img = render.error_overlay(img, labels, truth, 0.7)
                    st.image(media.encode_jpeg(media.preview(img, 360)), width="stretch")
                except (UserError, OSError) as e:
                    st.caption(str(e))
                st.caption(f"**{r['image']}** · {per_image.measure_label(by)} {r['value']:.3f}")
                st.button("Open", key=f"drill_open_{i}", on_click=open_image, args=(r["image"],))

# ---- one image: image | ground truth | A | B | errors ----
if image_tab.open:
    with image_tab:
        stems = [r["image"] for r in rows["A"]]
        if st.session_state.get("drill_image") not in stems:
            st.session_state["drill_image"] = stems[0]
        stem = st.selectbox("Image", stems, key="drill_image",
                            help="Or open one from a confusion cell, the scatter or the worst images")
        try:
            image, truth = loaders.evaluated_image(ev_a, stem)
            with st.spinner("Predictions ..."):
                preds = {k: loaders.evaluated_prediction(ev, stem, image, truth.shape)
                         for k, ev in (("A", ev_a), ("B", ev_b)) if ev is not None}
        except (UserError, OSError) as e:
            st.error(str(e))
            st.stop()
        row = {k: next(r for r in v if r["image"] == stem) for k, v in rows.items()}
        v1, v2 = st.columns([1, 2], gap="large")
        alpha = v1.slider("Overlay opacity", 0.0, 1.0, 0.6, 0.05, key="drill_alpha")
        with v2:
            visible = widgets.class_filter("drill_classes")
        metrics = st.columns(2 * len(row))
        for i, (k, r) in enumerate(row.items()):
            metrics[2 * i].metric(f"{k}: mIoU of this image", f"{r['miou']:.3f}")
            metrics[2 * i + 1].metric(f"{k}: boundary mIoU", "n/a" if r["boundary_miou"] is None
                                      else f"{r['boundary_miou']:.3f}")
        screen = media.preview(image, 1024)
        small_truth = media.preview(truth, 1024)
        top = st.columns(2)
        top[0].image(media.encode_jpeg(screen), caption=f"{stem} ({image.shape[1]}x{image.shape[0]})", width="stretch")
        top[1].image(media.encode_jpeg(render.overlay(screen, small_truth, alpha, visible)), width="stretch",
                     caption="ground truth")
        for title, draw in (("prediction", lambda p: render.overlay(screen, p, alpha, visible)),
                            ("errors: wrong pixels in the colour of what it predicted",
                             lambda p: render.error_overlay(screen, p, small_truth, alpha, visible))):
            cols = st.columns(2)
            for col, (k, pred) in zip(cols, preds.items()):
                labels = media.preview(pred.labels, 1024)
                wrong = float(np.mean(render.errors(pred.labels, truth)[truth != 255])) if (truth != 255).any() else 0.0
                col.image(media.encode_jpeg(draw(labels)), width="stretch",
                          caption=f"{k} · {names[k]}: {title}" + (f" ({wrong:.1%} of labelled pixels wrong)"
                                                                  if title.startswith("errors") else f" ({pred.source})"))
        st.markdown("**Per-class IoU in this image** (boundary: within the band)")
        per_class = tables.image_iou_frame(row)
        st.dataframe(per_class, width="stretch", key="drill_image_table", placeholder="–",
                     column_config={c: st.column_config.NumberColumn(format="%.3f") for c in per_class})
