"""Coverage: how much of each scene is road, vegetation, sky, vehicles, people ... and, for planners,
the street-level indicators (Green View Index ...) on a map, with what stands behind them."""
import tempfile
from pathlib import Path

import pandas as pd
import streamlit as st

from dashboard import charts, loaders, maps, media, tables, widgets
from engine import coverage, geo, settings, survey
from engine.images import FORMAT_NAMES
from engine.render import overlay

VIEW_WIDTH = 640  # the copy of each image kept to show when its point is clicked

st.title("Class coverage")
st.caption("Upload street photos (or a zip of them), or a dashcam video with its GPX track; a model labels every "
           "pixel and the page reports the share of each class, the planners' indicators (Green View Index, sky view, "
           "road, sidewalk, building, vehicles, people) per image, on a map and per district or grid cell. "
           "Export as CSV and GeoJSON.")

models = widgets.models_or_stop()
model = widgets.pick_model("Model", models, "coverage_model", default=0)

source = st.segmented_control("Source", ["Photos", "Dashcam video"], default="Photos", key="coverage_source")
uploads, locations, drive = [], None, None
if source == "Dashcam video":
    left, right = st.columns(2)
    video = left.file_uploader("Video", type=media.VIDEO_TYPES, key="coverage_video")
    gpx = right.file_uploader("Its GPX track (with times)", type=["gpx"], key="coverage_gpx")
    every_m = left.number_input("A frame every (metres of the route)", 1.0, 1000.0, 10.0, 1.0, key="coverage_every_m")
    offset_s = right.number_input("Video starts after the track's first point (s)", 0.0, 86400.0, 0.0, 1.0,
                                  key="coverage_offset")
    if video is not None and gpx is not None:
        drive = (media.Upload(video.name, video.getvalue()), media.Upload(gpx.name, gpx.getvalue()), every_m, offset_s)
    elif st.toggle("Use a sample drive (a synthetic clip and its GPX track)", key="coverage_sample_drive"):
        clip, track = media.sample_drive()
        drive = (clip, track, every_m, offset_s)
    else:
        st.info("Upload a dashcam video and the GPX track recorded with it, or switch on the sample drive.")
        st.stop()
else:
    files = st.file_uploader("Images or a zip of images", type=media.IMAGE_TYPES + ["zip"], accept_multiple_files=True,
                             key="coverage_upload")
    uploads = [media.Upload(f.name, f.getvalue()) for f in files or []]
    places_csv = st.file_uploader("Places (optional): a CSV of file, lat, lon; else each photo's EXIF GPS",
                                  type=["csv"], key="coverage_locations")
    if not uploads and st.toggle("Use 8 sample street photos (with EXIF GPS)", key="coverage_sample"):
        uploads = media.sample_photos()
    if not uploads:
        st.info(f"Upload one or more images ({FORMAT_NAMES}) or a zip of them, or switch on the sample photos.")
        st.stop()
    if places_csv is not None:
        try:
            locations = media.read_locations(places_csv.name, places_csv.getvalue())
        except geo.GeoError as e:
            st.error(str(e))
            st.stop()

terrain = st.toggle("Count terrain (grass, soil) in the Green View Index", key="coverage_terrain",
                    help="Off: vegetation only (trees, hedges, bushes), as Treepedia's Green View Index.")
prov = loaders.provenance(loaders.store_url(), model.variant, str(model.checkpoint), model.mtime_ns, terrain)
images, problems = media.expand(uploads)
job = (str(model.checkpoint), model.mtime_ns, loaders.backend(), prov.evaluation_label, terrain,
       tuple(u.digest for u in images), tuple(sorted((k, v) for k, v in (locations or {}).items())),
       drive and (drive[0].digest, drive[1].digest, drive[2], drive[3]))
result = st.session_state.get("_coverage")
if result is None or result["job"] != job:
    seg = widgets.segmenter_or_stop(model)
    found, views = survey.Survey(prov), []
    bar = st.progress(0.0, text="Labelling ...")

    def predict(rgb):
        labels = seg.predict(rgb)
        views.append((media.preview(rgb, VIEW_WIDTH), media.preview(labels, VIEW_WIDTH)))
        return labels

    if drive is not None:
        clip, track_file, every_m, offset_s = drive
        try:
            track = media.read_gpx(track_file.name, track_file.data)
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / Path(clip.name).name
                path.write_bytes(clip.data)
                survey.survey_video(found, predict, path, track, every_m=every_m, offset_s=offset_s, source=clip.name,
                                    on_frame=lambda k, n: bar.progress(k / n, text=f"Frame {k} of {n}"))
        except (geo.GeoError, media.UploadError, ValueError) as e:
            problems.append(str(e))
    for k, up in enumerate(images):
        try:
            rgb = media.decode_image(up.name, up.data)
            place = survey.image_place(up.data, up.name, locations)
            found.add(up.name, predict(rgb), place)
        except (media.UploadError, geo.GeoError) as e:
            problems.append(str(e))
        bar.progress((k + 1) / len(images), text=f"Image {k + 1} of {len(images)}")
    bar.empty()
    result = {"job": job, "survey": found, "views": views, "problems": problems,
              "thumbnails": [maps.thumbnail_uri(image) for image, _ in views]}
    st.session_state["_coverage"] = result

found, views = result["survey"], result["views"]
for p in result["problems"]:
    st.warning(f"Skipped {p}")
if not found.rows:
    st.error("None of the uploaded files could be used.")
    st.stop()

# ---- What stands behind the numbers ----
if prov.warning:
    st.warning(prov.warning)
with st.expander(f"What stands behind these shares: {prov.line()}", expanded=not prov.validated):
    st.dataframe(tables.provenance_frame(prov), hide_index=True, width="stretch", key="coverage_provenance",
                 column_config={"IoU": st.column_config.NumberColumn(format="%.3f")})

# ---- Indicators over all images, then the map ----
means = coverage.mean_indicators(found.places)
n_images, n_placed = len(found.places), sum(r["located"] for r in found.places)
unit = "frame" if found.route else "image"
st.subheader(f"Indicators: mean of {n_images} {unit}{'s' if n_images != 1 else ''}")
row = st.container(horizontal=True, gap="medium")
for ind in coverage.INDICATORS:
    value = means[ind.key]
    row.metric(ind.label, "-" if value is None else f"{value:.1%}", help=ind.meaning, width="content")

st.subheader("Map")
left, mid, right = st.columns([2, 2, 1])
indicator = left.selectbox("Colour by", coverage.INDICATOR_KEYS, format_func=coverage.INDICATOR_LABELS.get,
                           key="coverage_indicator")
aggregate = mid.segmented_control("Aggregate by", ["Nothing", "Grid", "Districts"], default="Nothing",
                                  key="coverage_aggregate")
districts = None
grid_m = None
if aggregate == "Grid":
    grid_m = right.number_input("Cell size (m)", 10.0, 100000.0, 100.0, 10.0, key="coverage_grid_m")
elif aggregate == "Districts":
    upload = right.file_uploader("Districts (GeoJSON polygons)", type=["geojson", "json"], key="coverage_districts")
    if upload is None:
        st.caption("Upload a GeoJSON file of district polygons (WGS 84 lon/lat, named by their `name` property "
                   "or their first text property) to shade each by its images' mean.")
    else:
        try:
            districts = media.read_districts(upload.name, upload.getvalue())
        except geo.GeoError as e:
            st.error(str(e))
survey.assign_areas(found, districts, grid_m)
if n_placed < n_images:
    st.caption(f"{n_images - n_placed} of {n_images} {unit}s have no place (no EXIF GPS and no line in the places "
               "CSV): they count in every table and export, marked `located = false`, but not on the map.")
points = pd.DataFrame(found.places, columns=coverage.PLACE_COLUMNS)
try:
    tiles = settings.map_tiles()
except ValueError as e:
    st.warning(f"{e}; showing plain longitude/latitude axes.")
    tiles = None
clicked = None
if not n_placed:  # nothing to draw: say so in one line rather than under an empty map
    st.info("No image has a place, so there is nothing to map: give photos with EXIF GPS, a places CSV "
            "(file, lat, lon), or a dashcam video with its GPX track.")
else:
    fig = maps.map_figure(points, indicator, areas=survey.map_areas(found), route=found.route, tile_url=tiles)
    # a new survey gets a new map (key), so a click on the last one is not taken for a photo of this one
    clicked = maps.geo_map(fig, result["thumbnails"], key=f"coverage_map_{hash(job) & 0xFFFFFFFF:08x}")
if clicked is not None and 0 <= clicked < len(views):
    row = found.places[clicked]
    image, labels = views[clicked]
    st.markdown(f"**{row['source']}**: " + ", ".join(
        f"{coverage.INDICATOR_LABELS[k]} {row[k]:.1%}" for k in coverage.INDICATOR_KEYS if row[k] is not None))
    a, b = st.columns(2)
    a.image(image, caption="image", width="stretch")
    b.image(overlay(image, labels, 0.6), caption=f"{found.model}'s labels", width="stretch")
elif n_placed:
    st.caption("Click a point to see its image and the model's labels.")
if found.areas:
    st.dataframe(pd.DataFrame(survey.area_rows(found), columns=survey.AREA_COLUMNS), hide_index=True, width="stretch",
                 key="coverage_areas", column_config={k: st.column_config.ProgressColumn(
                     coverage.INDICATOR_LABELS[k], format="percent", min_value=0.0, max_value=1.0)
                     for k in coverage.INDICATOR_KEYS})

# ---- Classes and categories ----
rows = found.rows
total = prov.stamp(coverage.aggregate(rows))
summary = pd.DataFrame(coverage.summary(rows), columns=coverage.SUMMARY_COLUMNS)
overall = pd.DataFrame(coverage.summary(total), columns=coverage.SUMMARY_COLUMNS).iloc[0]
st.subheader(f"All {n_images} {unit}{'s' if n_images != 1 else ''} together (pixel-weighted)")
cats = list(coverage.CATEGORIES)
for col, cat in zip(st.columns(len(cats)), cats):
    col.metric(cat.capitalize(), f"{overall[f'share_{cat}']:.1%}")
left, right = st.columns([1, 1], gap="large")
left.plotly_chart(charts.class_share_figure(total, "Share of pixels per class"), width="stretch",
                  key="coverage_classes")
right.markdown(f"**Categories per {unit}**")
right.plotly_chart(charts.category_share_figure(summary), width="stretch", key="coverage_categories")

st.subheader(f"Per {unit}")
pct = {f"share_{c}": st.column_config.ProgressColumn(c, format="percent", min_value=0.0, max_value=1.0) for c in cats}
st.dataframe(summary, hide_index=True, width="stretch", key="coverage_summary",  # provenance: said above
             column_order=[c for c in coverage.SUMMARY_COLUMNS if c not in coverage.PROVENANCE_COLUMNS],
             column_config={"top_class": st.column_config.TextColumn("top class"),
                            "top_share": st.column_config.NumberColumn("top share", format="percent"),
                            "pixels": st.column_config.NumberColumn("pixels", format="localized"), **pct})
with st.expander(f"Indicators and place per {unit}"):
    st.dataframe(points, hide_index=True, width="stretch", key="coverage_places")
with st.expander(f"All rows (tidy: one row per {unit} and class)"):
    st.dataframe(pd.DataFrame(rows, columns=coverage.CSV_COLUMNS), hide_index=True, width="stretch",
                 column_config={"share": st.column_config.NumberColumn(format="percent")})

row = st.container(horizontal=True, gap="small")
row.download_button("GeoJSON (map layers)", geo.to_geojson(survey.geojson(found)).encode(), "coverage.geojson",
                    "application/geo+json", key="dl_geojson", on_click="ignore", type="primary")
row.download_button("Coverage CSV (tidy)", coverage.to_csv(rows).encode(), "coverage.csv", "text/csv",
                    key="dl_coverage", on_click="ignore")
row.download_button("Indicators CSV", coverage.to_csv(found.places, coverage.PLACE_COLUMNS).encode(),
                    "coverage_indicators.csv", "text/csv", key="dl_indicators", on_click="ignore")
row.download_button("Per-image summary CSV",
                    coverage.to_csv(summary.to_dict("records"), coverage.SUMMARY_COLUMNS).encode(),
                    "coverage_summary.csv", "text/csv", key="dl_summary", on_click="ignore")
row.download_button("All images together CSV", coverage.to_csv(total).encode(), "coverage_all_images.csv", "text/csv",
                    key="dl_total", on_click="ignore")
