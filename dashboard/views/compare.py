"""Compare: two models on your own image or video, side by side at the original resolution."""
import hashlib
import shutil
import tempfile
from pathlib import Path

import numpy as np
import streamlit as st

from dashboard import loaders, media, widgets
from dashboard.video_compare import process_video, reencode, render_pair
from engine import images, render, video
from engine.coverage import class_pixels
from engine.errors import UserError
from engine.data.synthetic import render_scene

st.title("Compare two models")
st.caption(f"Upload a street image ({images.FORMAT_NAMES}; any size up to the pixel limit) or a video "
           "(MP4, AVI, MOV). Changing the view, opacity or classes re-draws from the kept predictions: models run "
           "once per upload.")

models = widgets.models_or_stop()
c1, c2 = st.columns(2)
with c1:
    model_a = widgets.pick_model("Model A", models, "compare_a", default=0)
with c2:
    model_b = widgets.pick_model("Model B", models, "compare_b", default=1)
widgets.parent_shortcut(models, model_a, model_b)


@st.cache_data(show_spinner=False, max_entries=2)
def sample_scene(seed: int = 7, width: int = 1024, height: int = 512) -> bytes:
    rgb, _, _ = render_scene(np.random.default_rng(seed), width, height)
    return media.encode_png(rgb)


up = st.file_uploader("Image or video", type=media.IMAGE_TYPES + media.VIDEO_TYPES, key="compare_upload")
if up is not None:
    upload = media.Upload(up.name, up.getvalue())
elif st.toggle("Use a sample street scene", key="compare_sample",
               help="A synthetic scene from the engine's generator, for a first look without your own image"):
    upload = media.Upload("sample_scene.png", sample_scene())
else:
    st.info("Upload an image or a video, or switch on the sample street scene.")
    st.stop()

try:
    kind = media.kind_of(upload.name)
    if kind == "zip":
        raise media.UploadError(f"{upload.name}: zips of images go to the Coverage page; upload one image or video here")
except media.UploadError as e:
    st.error(str(e))
    st.stop()

# ---- read the upload before drawing any control: a bad file gets only its message ----
if kind == "image":
    cached = st.session_state.get("_compare_image")
    if cached is None or cached[0] != upload.digest:
        try:
            decoded = media.decode_image(upload.name, upload.data)
        except media.UploadError as e:
            st.error(str(e))
            st.stop()
        cached = (upload.digest, decoded, media.preview(decoded))
        st.session_state["_compare_image"] = cached
    _, image, screen = cached
    h, w = image.shape[:2]
else:
    workdir = Path(st.session_state.setdefault("_compare_dir", tempfile.mkdtemp(prefix="segbench-compare-")))
    src = workdir / upload.digest[:16] / Path(upload.name).name  # its own name: messages name the user's file
    if not src.exists():
        for old in workdir.glob("*/"):  # one video per session on disk: the previous upload goes
            if old.name != "out":
                shutil.rmtree(old, ignore_errors=True)
        src.parent.mkdir(parents=True, exist_ok=True)
        src.write_bytes(upload.data)
    try:
        info = video.probe(src)
    except video.VideoError as e:
        st.error(str(e))
        st.stop()


# ---- an optional corruption of the input (engine.robustness), before both models see it ----
def corruption_control() -> tuple[str, int] | None:
    """(corruption, severity) chosen, or None when "Apply a corruption" is off (the default)."""
    t, c1, c2 = st.columns([1, 2, 1], vertical_alignment="bottom")
    if not t.toggle("Apply a corruption", key="compare_corrupt",
                    help="Corrupt the input as `python -m engine robustness` does (ImageNet-C / Cityscapes-C "
                         "corruptions, a fixed seed per file), then run both models on it"):
        return None
    from engine.robustness import groups

    group = {name: g for g, names in groups().items() for name in names}
    name = c1.selectbox("Corruption", list(group), key="compare_corruption",
                        format_func=lambda n: f"{group[n]} · {n.replace('_', ' ')}")
    severity = c2.slider("Severity", 1, 5, 3, key="compare_severity")
    return name, severity


corruption = corruption_control()
stem = Path(upload.name).stem
digest = upload.digest
if corruption and kind == "image":
    from engine.robustness import CorruptionError, corrupt, seed_for

    name, severity = corruption
    cached = st.session_state.get("_compare_corrupted")
    if cached is None or cached[0] != (upload.digest, name, severity):
        try:
            with st.spinner(f"Applying {name} at severity {severity} ..."):
                corrupted = corrupt(image, name, severity, seed_for(stem, name, severity))
        except CorruptionError as e:
            st.error(f"{upload.name}: {e}")
            st.stop()
        # the predictions are kept per image digest: this one names the corrupted pixels
        key = hashlib.sha256(f"{upload.digest}|{name}|{severity}".encode()).hexdigest()
        cached = ((upload.digest, name, severity), key, corrupted, media.preview(corrupted))
        st.session_state["_compare_corrupted"] = cached
    _, digest, image, corrupted_screen = cached
    i1, i2 = st.columns(2)
    i1.image(media.encode_jpeg(screen), caption=f"{upload.name}: the original", width="stretch")
    i2.image(media.encode_jpeg(corrupted_screen), width="stretch",
             caption=f"{name.replace('_', ' ')}, severity {severity}: what both models see")
    screen = corrupted_screen
    stem = f"{stem}_{name}{severity}"

# ---- view controls (shared by image and video) ----
v1, v2 = st.columns([1, 2], gap="large")
with v1:
    mode = st.radio("View", list(render.VIEW_MODES), format_func=render.VIEW_MODES.get, key="view_mode")
    alpha = st.slider("Overlay opacity", 0.0, 1.0, 0.5, 0.05, key="alpha",
                      help="0: only the photo; 1: only the class colours", disabled=mode == "mask")
with v2:
    visible = widgets.class_filter()



def show_pair(out_a, out_b, caption_a: str, caption_b: str) -> None:
    col_a, col_b = st.columns(2)
    col_a.markdown(f"**A · {model_a.variant}**")
    col_a.image(media.encode_jpeg(out_a), caption=caption_a, width="stretch")
    col_b.markdown(f"**B · {model_b.variant}**")
    col_b.image(media.encode_jpeg(out_b), caption=caption_b, width="stretch")


def show_legend(pixels_a, pixels_b) -> None:
    present = sorted(set(np.flatnonzero(pixels_a)) | set(np.flatnonzero(pixels_b)))
    shown = [c for c in present if c in set(visible)]
    shares = {"A": (pixels_a / max(pixels_a.sum(), 1)).tolist(), "B": (pixels_b / max(pixels_b.sum(), 1)).tolist()}
    st.markdown("**Legend** (classes present and shown; pixel share in A · B)")
    st.html(widgets.legend_html(shown, shares) if shown else "<i>no shown class in these predictions</i>")


if kind == "image":
    for m in (model_a, model_b):
        _ = widgets.segmenter_or_stop(m)   # loaded now, or the page stops with the reason
    with st.spinner("Running both models ..."):
        pa = loaders.predict(model_a, image, digest)
        pb = loaders.predict(model_b, image, digest)
    same = model_a == model_b
    show_pair(*render_pair(screen, pa.preview, pb.preview, mode, alpha, visible),
              f"{w}x{h} · inference {pa.seconds * 1000:.0f} ms on {pa.device}",
              f"{w}x{h} · the same model as A" if same else f"{w}x{h} · inference {pb.seconds * 1000:.0f} ms on {pb.device}")
    m1, m2, m3 = st.columns(3)
    m1.metric("Inference A", f"{pa.seconds * 1000:.0f} ms")
    m2.metric("Inference B", "same model as A" if same else f"{pb.seconds * 1000:.0f} ms")
    m3.metric("Pixels where A and B agree", f"{np.mean(pa.labels == pb.labels):.1%}")
    show_legend(pa.pixels, pb.pixels)

    def full(side: str) -> np.ndarray:  # downloads: drawn at the original resolution when clicked
        out_a, out_b = render_pair(image, pa.labels, pb.labels, mode, alpha, visible)
        return {"a": out_a, "b": out_b, "both": render.side_by_side(out_a, out_b)}[side]

    st.markdown("**Downloads** (original resolution)")
    row = st.container(horizontal=True, gap="small")
    row.download_button("A as PNG", lambda: media.encode_png(full("a")), f"{stem}_{model_a.variant}.png", "image/png",
                         key="dl_a", on_click="ignore")
    row.download_button("B as PNG", lambda: media.encode_png(full("b")), f"{stem}_{model_b.variant}.png", "image/png",
                         key="dl_b", on_click="ignore")
    row.download_button("Side by side", lambda: media.encode_png(full("both")),
                         f"{stem}_{model_a.variant}_vs_{model_b.variant}.png", "image/png", key="dl_sbs",
                         on_click="ignore")
    row.download_button("A label map", lambda: media.encode_png(pa.labels), f"{stem}_{model_a.variant}_trainIds.png",
                         "image/png", key="dl_la", on_click="ignore", help="8-bit PNG of Cityscapes trainIds (0-18)")
    row.download_button("B label map", lambda: media.encode_png(pb.labels), f"{stem}_{model_b.variant}_trainIds.png",
                         "image/png", key="dl_lb", on_click="ignore", help="8-bit PNG of Cityscapes trainIds (0-18)")
    st.stop()

# ---- video ----
st.caption(f"{upload.name}: {info.width}x{info.height}, {info.fps:.3g} fps, "
           f"{info.frames or 'unknown number of'} frames" + (f", {info.duration_s:.1f} s" if info.duration_s else ""))
limit = st.number_input("Frames to process", min_value=1, max_value=max(info.frames, 1) if info.frames else 100_000,
                        value=min(info.frames or 150, 150), key="video_frames",
                        help="From the start of the video; both models run on every frame")
job = (upload.digest, str(model_a.checkpoint), model_a.mtime_ns, str(model_b.checkpoint), model_b.mtime_ns, int(limit),
       corruption)
transform = None
if corruption:
    from engine.robustness import corrupt, seed_for

    def transform(frame, i, name=corruption[0], severity=corruption[1], clip=stem):
        """Frame i corrupted, seeded per frame (the noise changes from frame to frame, as it would)."""
        return corrupt(frame, name, severity, seed_for(f"{clip}_{i:06d}", name, severity))

    st.caption(f"Each frame gets {corruption[0].replace('_', ' ')} at severity {corruption[1]} before both models "
               "see it; the frames below and the videos show the corrupted frames.")
    stem = f"{stem}_{corruption[0]}{corruption[1]}"
result = st.session_state.get("_video_result")
if result is not None and st.session_state.get("_video_job") != job:
    result = None

if st.button("Process video", type="primary", key="process_video"):
    bar = st.progress(0.0, text="Processing frames ...")
    total = int(limit if not info.frames else min(limit, info.frames))
    seg_a = widgets.segmenter_or_stop(model_a)
    seg_b = widgets.segmenter_or_stop(model_b)
    try:
        result = process_video(src, seg_a.predict_batch, seg_b.predict_batch, workdir / "out", max_frames=int(limit), mode=mode,
                               alpha=alpha, visible=visible, transform=transform,
                               on_frame=lambda i: bar.progress(min(i / total, 1.0), text=f"Frame {i} of {total}"))
    except video.VideoError as e:
        st.error(str(e))
        st.stop()
    except UserError as e:  # a corruption refused: frames under 32x32
        st.error(f"{upload.name}: {e}")
        st.stop()
    bar.empty()
    st.session_state["_video_result"], st.session_state["_video_job"] = result, job

if result is None:
    st.info("Press **Process video** to run both models on the frames.")
    st.stop()

n = len(result)
m1, m2, m3 = st.columns(3)
m1.metric("Frames processed", n)
m2.metric("Model A per frame", f"{result.seconds_a / n * 1000:.0f} ms")
m3.metric("Model B per frame", f"{result.seconds_b / n * 1000:.0f} ms")

i = st.slider("Frame", 0, n - 1, 0, key="video_frame") if n > 1 else 0
image, la, lb = result.frame(i)
show_pair(*render_pair(media.preview(image), media.preview(la), media.preview(lb), mode, alpha, visible),
          f"frame {i}", f"frame {i}")
show_legend(class_pixels(la), class_pixels(lb))

st.markdown("**Processed videos** (H.264 MP4)")
if result.view != (mode, alpha, tuple(visible)):
    st.caption("The videos were drawn with other view settings than the ones above.")
    if st.button("Redraw the videos with the current view", key="reencode"):
        bar = st.progress(0.0, text="Encoding ...")
        reencode(result, workdir / "out", mode=mode, alpha=alpha, visible=visible,
                 on_frame=lambda k: bar.progress(k / n, text=f"Frame {k} of {n}"))
        st.rerun()
st.video(result.videos["side_by_side"].read_bytes(), format="video/mp4")
row = st.container(horizontal=True, gap="small")
for name, label in (("a", f"A: {model_a.variant}"), ("b", f"B: {model_b.variant}"), ("side_by_side", "Side by side")):
    row.download_button(f"{label} (MP4)", result.videos[name].read_bytes(), f"{stem}_{name}.mp4", "video/mp4",
                        key=f"dl_video_{name}", on_click="ignore")
