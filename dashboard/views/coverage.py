"""Coverage: how much of each scene is road, sidewalk, buildings, vegetation, vehicles, people ..."""
import numpy as np
import pandas as pd
import streamlit as st

from dashboard import charts, media, widgets
from engine import coverage
from engine.images import FORMAT_NAMES
from engine.data.synthetic import render_scene

st.title("Class coverage")
st.caption("Upload street images (or a zip of them); a model labels every pixel and the page reports the share of "
           "each class and category, per image and over all images (pixel-weighted). Export as CSV.")

models = widgets.models_or_stop()
model = widgets.pick_model("Model", models, "coverage_model", default=0)

files = st.file_uploader("Images or a zip of images", type=media.IMAGE_TYPES + ["zip"], accept_multiple_files=True,
                         key="coverage_upload")
uploads = [media.Upload(f.name, f.getvalue()) for f in files or []]
if not uploads and st.toggle("Use 4 sample street scenes", key="coverage_sample"):
    uploads = [media.Upload(f"sample_{k}.png", media.encode_png(render_scene(np.random.default_rng(100 + k), 512, 256)[0]))
               for k in range(4)]
if not uploads:
    st.info(f"Upload one or more images ({FORMAT_NAMES}) or a zip of them, or switch on the sample scenes.")
    st.stop()

images, problems = media.expand(uploads)
job = (str(model.checkpoint), model.mtime_ns, tuple(u.digest for u in images))
result = st.session_state.get("_coverage")
if result is not None and result["job"] != job:
    result = None

if result is None:
    rows, bar = [], st.progress(0.0, text="Labelling images ...")
    seg = widgets.segmenter_or_stop(model)
    for k, up in enumerate(images):
        try:
            labels = seg.predict(media.decode_image(up.name, up.data))
        except media.UploadError as e:
            problems.append(str(e))
            continue
        rows += coverage.coverage_rows(up.name, model.variant, labels)
        bar.progress((k + 1) / len(images), text=f"Image {k + 1} of {len(images)}")
    bar.empty()
    result = {"job": job, "rows": rows, "problems": problems}
    st.session_state["_coverage"] = result

rows = result["rows"]
for p in result["problems"]:
    st.warning(f"Skipped {p}")
if not rows:
    st.error("None of the uploaded files could be used.")
    st.stop()

total = coverage.aggregate(rows)
summary = pd.DataFrame(coverage.summary(rows), columns=coverage.SUMMARY_COLUMNS)
overall = pd.DataFrame(coverage.summary(total), columns=coverage.SUMMARY_COLUMNS).iloc[0]
n_images = summary["source"].nunique()

st.subheader(f"All {n_images} image{'s' if n_images != 1 else ''} together")
cats = [c for c in coverage.CATEGORIES]
cols = st.columns(len(cats))
for col, cat in zip(cols, cats):
    col.metric(cat.capitalize(), f"{overall[f'share_{cat}']:.1%}")
left, right = st.columns([1, 1], gap="large")
left.plotly_chart(charts.class_share_figure(total, "Share of pixels per class"), width="stretch",
                  key="coverage_classes")
right.markdown("**Categories per image**")
right.plotly_chart(charts.category_share_figure(summary), width="stretch", key="coverage_categories")

st.subheader("Per image")
pct = {f"share_{c}": st.column_config.ProgressColumn(c, format="percent", min_value=0.0, max_value=1.0) for c in cats}
st.dataframe(summary, hide_index=True, width="stretch", key="coverage_summary",
             column_config={"top_class": st.column_config.TextColumn("top class"),
                            "top_share": st.column_config.NumberColumn("top share", format="percent"),
                            "pixels": st.column_config.NumberColumn("pixels", format="localized"), **pct})
with st.expander("All rows (tidy: one row per image and class)"):
    st.dataframe(pd.DataFrame(rows, columns=coverage.CSV_COLUMNS), hide_index=True, width="stretch",
                 column_config={"share": st.column_config.NumberColumn(format="percent")})

row = st.container(horizontal=True, gap="small")
row.download_button("Coverage CSV (tidy)", coverage.to_csv(rows).encode(), "coverage.csv", "text/csv",
                   key="dl_coverage", on_click="ignore", type="primary")
row.download_button("Per-image summary CSV", coverage.to_csv(summary.to_dict("records"), coverage.SUMMARY_COLUMNS).encode(),
                   "coverage_summary.csv", "text/csv", key="dl_summary", on_click="ignore")
row.download_button("All images together CSV", coverage.to_csv(total).encode(), "coverage_all_images.csv", "text/csv",
                   key="dl_total", on_click="ignore")
