"""The dashboard end to end: a real `streamlit run` server, driven by a real headless Chromium.

One server and one browser for the whole module, on the store and weights of `dashboard_data`
(two trained and evaluated models and one failed run). Every page must render its title without
an exception or an error box; then
the things a user does: read the leaderboard, pick a model on the Trade-offs chart, compare two
models on an uploaded image (and on a corrupt one), export class coverage as CSV, and the planners' map
(offline, a thumbnail on hover, the photo on click, GeoJSON).

Needs Debian's /usr/bin/chromium (or $CHROMIUM); Playwright never downloads a browser here.
Screenshots of every page land in the test's temporary folder (their paths are printed with -s).
"""
from __future__ import annotations

import csv
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dashboard import server
from dashboard.browser import launch
from engine import video
from engine.coverage import CSV_COLUMNS
from engine.classes import NUM_CLASSES
from engine.data.synthetic import render_scene
from engine.runtime import PRECISIONS
from scripts.screenshots import PAGES, choose, wait_idle

# every precision a caption can name: whichever the calibration of this CPU picks (bf16, mixed, fp32) is right
SHOWN_PRECISIONS = "|".join(p for p in PRECISIONS if p != "auto")

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
if not (os.path.isfile(CHROMIUM) or shutil.which(CHROMIUM)):
    if os.environ.get("CI"):  # CI installs it (scripts/install-chromium.sh): its absence is a failure there
        pytest.fail(f"no Chromium at {CHROMIUM} on CI", pytrace=False)
    pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium, or set $CHROMIUM): "
                "the browser tests never download a browser", allow_module_level=True)

from playwright.sync_api import Page, expect, sync_playwright  # noqa: E402

TITLES = {"leaderboard": "Leaderboard", "tradeoffs": "Trade-offs", "report": "Report", "per_class": "Per-class IoU",
          "robustness": "Robustness", "compare": "Compare two models", "drilldown": "Drill-down",
          "coverage": "Class coverage"}
WIDTH, HEIGHT = 1400, 900
TIMEOUT_MS = 120_000  # a first model load on 2 busy CPU cores can be slow
UPLOADER = "[data-testid='stFileUploader'] input[type=file]"


# ---------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def out_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("dashboard_browser")


@pytest.fixture(scope="module")
def app(dashboard_data, out_dir):
    """(base URL, browser, server log path): one dashboard server and one Chromium for the module."""
    env = dashboard_data.env
    log = out_dir / "streamlit.log"
    with server.running(env, log_path=log) as url, sync_playwright() as p:
        browser = launch(p)
        try:
            yield url, browser, log
        finally:
            browser.close()


@pytest.fixture
def page(app) -> Page:
    """A fresh browser session (its own Streamlit session state) per test."""
    url, browser, _ = app
    context = browser.new_context(base_url=url, viewport={"width": WIDTH, "height": HEIGHT}, accept_downloads=True)
    context.set_default_timeout(TIMEOUT_MS)
    yield context.new_page()
    context.close()


# ---------------------------------------------------------------- helpers

def open_page(page: Page, name: str) -> None:
    page.goto(f"/{PAGES[name]}")
    wait_idle(page)
    expect(page.locator("h1").first).to_have_text(TITLES[name])


FAILED_RUN = "TrainingDiverged"  # dashboard_data's failed run: the Leaderboard rightly shows its error


def assert_healthy(page: Page) -> None:
    """No Streamlit exception box and no error alert anywhere on the page (but the failed run's)."""
    exceptions = page.locator("[data-testid='stException']")
    assert exceptions.count() == 0, exceptions.all_inner_texts()
    errors = [t for t in page.locator("[data-testid='stAlertContentError']").all_inner_texts() if FAILED_RUN not in t]
    assert not errors, errors


def screenshot(page: Page, path: Path) -> Path:
    """The whole page: Streamlit scrolls inside stMain, so the window grows to the content first."""
    height = page.evaluate("document.querySelector('[data-testid=\"stMain\"]').scrollHeight")
    page.set_viewport_size({"width": WIDTH, "height": max(HEIGHT, int(height))})
    wait_idle(page)
    page.screenshot(path=str(path))
    page.set_viewport_size({"width": WIDTH, "height": HEIGHT})
    print(f"screenshot: {path}")
    return path


def rerun_after(page: Page, ready) -> None:
    """Wait until `ready` (a locator) shows, then until the script run that drew it has finished."""
    expect(ready).to_be_visible(timeout=TIMEOUT_MS)
    wait_idle(page)


def download(page: Page, button: str, path: Path) -> Path:
    with page.expect_download(timeout=TIMEOUT_MS) as info:
        page.get_by_role("button", name=button, exact=True).click()
    info.value.save_as(path)
    return path


def scene_png(path: Path, width: int, height: int, seed: int) -> Path:
    rgb, _, _ = render_scene(np.random.default_rng(seed), width, height)
    Image.fromarray(rgb).save(path)
    return path


# ---------------------------------------------------------------- tests

# Reversed, so that the server's very first request is a page's own URL rather than the root: a
# `pages/` folder next to app.py would then run that page as a bare script outside the navigation.
@pytest.mark.parametrize("name", list(PAGES)[::-1])
def test_every_page_renders_without_errors(page, name, out_dir):
    open_page(page, name)
    # reached by its own URL, a page still runs inside the app's navigation (not as a bare script)
    nav = page.locator("[data-testid='stSidebarNav'] [data-testid='stSidebarNavLink']")
    expect(nav).to_have_text([re.compile(f"{t}$") for t in ("Leaderboard", "Trade-offs", "Report", "Per-class",
                                                            "Robustness", "Compare", "Drill-down", "Coverage")])  # after the icon's ligature name
    expect(page.locator("[data-testid='stSidebarUserContent'] h3")).to_have_text(re.compile("segbench$"))
    assert_healthy(page)
    assert screenshot(page, out_dir / f"{name}.png").stat().st_size > 10_000
    assert_healthy(page)  # also after the re-layout at the full height


def test_leaderboard_shows_the_evaluated_runs_and_the_failed_one(page, dashboard_data):
    open_page(page, "leaderboard")
    miou = max(r["miou"] for r in dashboard_data.results.values())
    best = page.locator("[data-testid='stMetric']").filter(has_text="Best mIoU")
    expect(best.locator("[data-testid='stMetricValue']")).to_have_text(f"{miou:.3f}")
    # the grid draws on a canvas; its accessible table holds the visible cells' text
    cells = page.locator("[data-testid='stDataFrame'] [role='gridcell']")
    for variant in (*dashboard_data.variants, "hrnetv2_w48_sgd"):
        expect(cells.filter(has_text=re.compile(rf"^{re.escape(variant)}$"))).to_have_count(1)
    expect(page.locator("[data-testid='stAlertContentError']")).to_contain_text("hrnetv2_w48_sgd")
    expect(page.get_by_text("built-in synthetic street scenes, not on Cityscapes")).to_be_visible()
    assert_healthy(page)


def hover(page: Page, point, label) -> tuple[float, float]:
    """Rest the mouse on a plotly point until its hover `label` shows (the chart is drawn and listening:
    a chart still being re-drawn under load ignores the mouse); returns where it rests."""
    for _ in range(10):
        point.scroll_into_view_if_needed()
        box = point.bounding_box()
        x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        page.mouse.move(x - 40, y - 40)
        page.mouse.move(x, y, steps=4)
        try:
            expect(label).to_be_visible(timeout=3000)
            break
        except AssertionError:
            continue
    return x, y


def click_point(page: Page, chart, point, shift: bool = False) -> None:
    """Click a plotly point as a user does: the mouse rests on it until plotly shows its hover label,
    then clicks where it rests; plotly picks the point under the mouse on its drag layer."""
    x, y = hover(page, point, chart.locator(".hoverlayer .hovertext"))
    if shift:
        page.keyboard.down("Shift")
    page.mouse.click(x, y)
    if shift:
        page.keyboard.up("Shift")


def test_tradeoffs_click_selects_a_model_for_compare(page, dashboard_data):
    open_page(page, "tradeoffs")
    chart = page.locator("[data-testid='stPlotlyChart']").first
    click_point(page, chart, chart.locator(".scatterlayer path.point").first)
    message = page.locator("[data-testid='stAlertContentSuccess']").filter(has_text="Selected for Compare")
    rerun_after(page, message)
    expect(message).to_have_text(re.compile(
        "^Selected for Compare: model A = (" + "|".join(map(re.escape, dashboard_data.variants)) + ")$"))
    expect(page.get_by_role("link", name=re.compile("Open Compare"))).to_be_visible()
    assert_healthy(page)
    # shift-click adds a second point: model B
    click_point(page, chart, chart.locator(".scatterlayer path.point").nth(1), shift=True)
    expect(message).to_have_text(re.compile(r"model A = \w+, model B = \w+$"), timeout=TIMEOUT_MS)
    assert set(re.findall(r"= (\w+)", message.inner_text())) == set(dashboard_data.variants)


def test_robustness_page_draws_its_charts(page, dashboard_data, out_dir):
    """The sweeps of `dashboard_data` drawn by plotly in the browser: the mPC/rPC bars, one panel
    per corruption, the group retention, the per-class heatmap under its class colours, the domain shift."""
    open_page(page, "robustness")
    charts = page.locator("[data-testid='stPlotlyChart']")
    expect(charts).to_have_count(5)
    for k in range(5):
        expect(charts.nth(k).locator(".main-svg").first).to_be_visible()
    severity = charts.nth(1)
    for title in ("gaussian_noise (noise)", "fog (weather)"):
        expect(severity.locator(".annotation-text", has_text=title)).to_have_count(1)
    expect(severity.locator(".scatterlayer .trace")).to_have_count(2 * len(dashboard_data.variants))
    expect(charts.nth(3).locator(".hm image, .heatmaplayer image").first).to_be_attached()
    expect(charts.nth(4).locator(".legendtext", has_text="synthetic-acdc · fog")).to_have_count(1)
    best = page.locator("[data-testid='stMetric']").filter(has_text="Best mPC")
    expect(best.locator("[data-testid='stMetricValue']")).to_have_text(re.compile(r"^0\.\d{3}$"))
    assert_healthy(page)
    screenshot(page, out_dir / "robustness_charts.png")


def test_compare_an_uploaded_image_and_a_corrupt_one(page, dashboard_data, tmp_path, out_dir):
    best, second = sorted(dashboard_data.variants, key=lambda v: -dashboard_data.results[v]["miou"])
    open_page(page, "compare")
    images = page.locator("[data-testid='stImage'] img")
    expect(images).to_have_count(0)

    page.locator(UPLOADER).set_input_files(str(scene_png(tmp_path / "street.png", 320, 160, seed=0)))
    expect(images).to_have_count(2, timeout=TIMEOUT_MS)
    wait_idle(page)
    assert_healthy(page)
    for k in range(2):  # decoded, and at the upload's own resolution
        size = images.nth(k).evaluate("img => img.complete ? [img.naturalWidth, img.naturalHeight] : null")
        assert size == [320, 160], size
    captions = page.locator("[data-testid='stImageCaption']")
    expect(captions).to_have_count(2)
    for text in captions.all_inner_texts():
        assert re.fullmatch(rf"320x160 · inference \d+ ms on (cpu|cuda), (torch|onnxruntime-\w+) ({SHOWN_PRECISIONS})",
                            text.strip()), text
    expect(page.get_by_text(f"A · {best}", exact=True)).to_be_visible()  # best mIoU first
    expect(page.get_by_text(f"B · {second}", exact=True)).to_be_visible()
    agree = page.locator("[data-testid='stMetric']").filter(has_text="Pixels where A and B agree")
    expect(agree.locator("[data-testid='stMetricValue']")).to_have_text(re.compile(r"^\d{1,3}\.\d%$"))
    expect(page.get_by_text("Legend", exact=True)).to_be_visible()
    screenshot(page, out_dir / "compare_image.png")

    png = download(page, "A as PNG", tmp_path / "a.png")
    with Image.open(png) as img:
        assert (img.format, img.mode, img.size) == ("PNG", "RGB", (320, 160))

    # the class filter re-draws from the kept predictions: no class shown, no legend chip
    page.get_by_role("button", name="None", exact=True).click()
    rerun_after(page, page.get_by_text("no shown class in these predictions"))
    expect(images).to_have_count(2)
    assert_healthy(page)

    broken = tmp_path / "broken.png"
    broken.write_bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    page.locator(UPLOADER).set_input_files(str(broken))
    error = page.locator("[data-testid='stAlertContentError']")
    rerun_after(page, error)
    expect(error).to_contain_text("broken.png: unreadable or corrupt image")
    expect(images).to_have_count(0)
    expect(page.locator("h1").first).to_have_text(TITLES["compare"])
    assert page.locator("[data-testid='stException']").count() == 0
    screenshot(page, out_dir / "compare_corrupt.png")

    # and the page goes on working: removing the broken file brings back the invitation to upload
    page.locator("[data-testid='stFileChipDeleteBtn'] button").click()
    rerun_after(page, page.get_by_text("Upload an image or a video, or switch on the sample street scene."))
    assert_healthy(page)


def test_compare_a_video_plays_in_the_browser(page, tmp_path, out_dir):
    """The processed side-by-side MP4 (H.264) decodes in Chromium's own <video> element."""
    frames = [render_scene(np.random.default_rng(k), 160, 80)[0] for k in range(6)]
    clip = tmp_path / "drive.mp4"
    video.write_video(clip, frames, fps=6)
    open_page(page, "compare")
    page.locator(UPLOADER).set_input_files(str(clip))
    rerun_after(page, page.get_by_role("button", name="Process video"))
    page.get_by_role("button", name="Process video").click()
    player = page.locator("[data-testid='stVideo']")
    rerun_after(page, player)
    assert_healthy(page)
    state = player.evaluate("""v => new Promise(done => {
        const report = () => done({ready: v.readyState, width: v.videoWidth, height: v.videoHeight,
                                   duration: v.duration, error: v.error && v.error.code});
        if (v.readyState >= 1 || v.error) report(); else { v.onloadedmetadata = report; v.onerror = report; }
    })""")
    assert state["error"] is None and state["ready"] >= 1, state
    assert (state["width"], state["height"]) == (2 * 160 + 8, 80) and state["duration"] == pytest.approx(1.0, abs=0.2)
    screenshot(page, out_dir / "compare_video.png")


def test_coverage_of_two_uploads_exports_a_tidy_csv(page, dashboard_data, tmp_path, out_dir):
    open_page(page, "coverage")
    sizes = {"first.png": (320, 160), "second.png": (200, 120)}
    files = [str(scene_png(tmp_path / name, w, h, seed=k)) for k, (name, (w, h)) in enumerate(sizes.items())]
    page.get_by_role("region", name="Images or a zip of images").locator("input[type=file]").set_input_files(files)
    rerun_after(page, page.get_by_role("button", name="Coverage CSV (tidy)", exact=True))
    assert_healthy(page)
    expect(page.get_by_role("heading", name="All 2 images together")).to_be_visible()
    screenshot(page, out_dir / "coverage_two_images.png")

    path = download(page, "Coverage CSV (tidy)", tmp_path / "coverage.csv")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == CSV_COLUMNS
        rows = list(reader)
    assert len(rows) == len(sizes) * NUM_CLASSES
    best = max(dashboard_data.variants, key=lambda v: dashboard_data.results[v]["miou"])
    assert {r["model"] for r in rows} == {best}  # the default model: the best mIoU
    for source, (w, h) in sizes.items():
        mine = [r for r in rows if r["source"] == source]
        assert sorted(int(r["class_id"]) for r in mine) == list(range(NUM_CLASSES))
        assert sum(int(r["pixels"]) for r in mine) == w * h
        assert sum(float(r["share"]) for r in mine) == pytest.approx(1.0, abs=1e-6)


def test_coverage_map_of_sample_photos_offline_hover_click_and_geojson(page, tmp_path, out_dir):
    """The planners' map: drawn with nothing fetched from outside the machine, a photo's thumbnail on
    hover, its image and labels on click, and the GeoJSON export."""
    import json
    from urllib.parse import urlparse

    from geojson_pydantic import FeatureCollection

    outside, errors, failed = [], [], []

    def only_local(route):
        if urlparse(route.request.url).hostname in ("127.0.0.1", "localhost"):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    page.route("**/*", only_local)
    page.on("console", lambda m: m.type == "error" and not m.text.startswith("Failed to load resource")
            and errors.append(m.text))
    page.on("response", lambda r: r.status >= 400 and failed.append(urlparse(r.url).path))
    open_page(page, "coverage")
    page.get_by_text("Use 8 sample street photos").click()
    frame = page.frame_locator("iframe[title='dashboard.maps.geo_map']")
    points = frame.locator(".js-plotly-plot .scatterlayer path.point")
    expect(points).to_have_count(8, timeout=TIMEOUT_MS)
    wait_idle(page)
    assert_healthy(page)
    tip = frame.locator("#tip")  # the photo's own tooltip, in place of plotly's label
    x, y = hover(page, points.nth(5), tip)
    expect(tip).to_contain_text("Green View Index")
    assert tip.locator("img").get_attribute("src").startswith("data:image/jpeg")
    name = tip.locator("div").first.inner_text()
    page.mouse.click(x, y)
    caption = page.get_by_text("'s labels")
    rerun_after(page, caption)
    expect(page.get_by_text(name, exact=False).first).to_be_visible()
    page.mouse.move(x, y)
    screenshot(page, out_dir / "coverage_map.png")
    assert not outside, outside
    assert not errors, errors
    # Streamlit's own probe for a base path under the page's URL (then it finds the server at /)
    assert set(failed) <= {"/coverage/_stcore/health", "/coverage/_stcore/host-config"}, failed

    fc = json.loads(download(page, "GeoJSON (map layers)", tmp_path / "coverage.geojson").read_text())
    FeatureCollection.model_validate(fc)
    lonlat = [f["geometry"]["coordinates"] for f in fc["features"]]
    assert len(lonlat) == 8 and all(9.17 < lon < 9.19 and 48.77 < lat < 48.78 for lon, lat in lonlat)
    assert fc["provenance"]["validated"] is False


def test_report_page_builds_and_downloads_the_html_and_the_pdf(page, dashboard_data, tmp_path, out_dir):
    from pypdf import PdfReader

    open_page(page, "report")
    page.get_by_role("button", name="Build the report").click()
    rerun_after(page, page.get_by_role("button", name="Download PDF", exact=True))
    assert_healthy(page)
    screenshot(page, out_dir / "report_page.png")
    html = download(page, "Download HTML", tmp_path / "report.html").read_text(encoding="utf-8")
    assert all(v in html for v in dashboard_data.variants) and "Recommended" in html
    best = max(dashboard_data.variants, key=lambda v: dashboard_data.results[v]["miou"])
    pdf = PdfReader(download(page, "Download PDF", tmp_path / "report.pdf"))
    text = "\n".join(p.extract_text() for p in pdf.pages)
    assert len(pdf.pages) >= 2 and best in text


def test_derived_models_show_on_tradeoffs_and_leaderboard(app, dashboard_data, tmp_path_factory, out_dir):
    """A store with deployment variants (tests.test_dashboard_app.make_derived_data: +prune0.5, +int8
    and +prune0.5+int8 of the DeepLabV3-R50 run), on a server of its own: plotly draws them joined to
    their parent with the method legend, and the Leaderboard grid lists them under their parent."""
    from tests.test_dashboard_app import make_derived_data

    derived = make_derived_data(dashboard_data, tmp_path_factory.mktemp("derived_browser"))
    _, browser, _ = app
    log = out_dir / "streamlit_derived.log"
    with server.running(derived.env, log_path=log) as url:
        context = browser.new_context(base_url=url, viewport={"width": WIDTH, "height": HEIGHT})
        context.set_default_timeout(TIMEOUT_MS)
        page = context.new_page()
        try:
            open_page(page, "tradeoffs")
            chart = page.locator("[data-testid='stPlotlyChart']").first
            expect(chart.locator(".main-svg").first).to_be_visible()
            for name in ("trained", "pruned", "INT8", "pruned + INT8"):  # the second legend: one symbol per method
                expect(chart.locator(".legend2text", has_text=re.compile(f"^{re.escape(name)}$"))).to_have_count(1)
            expect(chart.locator(".legend2titletext", has_text="Method")).to_have_count(1)
            expect(chart.locator(".legendtitletext", has_text="Architecture")).to_have_count(1)
            # a line from the parent to each of its 3 derived models, and the Pareto front's
            expect(chart.locator(".scatterlayer .trace .js-line")).to_have_count(3 + 1)
            expect(chart.locator(".scatterlayer path.point")).not_to_have_count(0)
            assert_healthy(page)
            screenshot(page, out_dir / "tradeoffs_derived.png")

            open_page(page, "leaderboard")
            grid = page.locator("[data-testid='stDataFrame']")
            expect(grid.locator("[role='gridcell']").filter(has_text=re.compile(r"^\s*↳ \+int8$"))).to_have_count(2)
            expect(grid.locator("[role='gridcell']").filter(has_text=re.compile(r"^↳ \+prune0\.5$"))).to_have_count(1)
            first = [row.locator("[role='gridcell']").first.inner_text().strip()
                     for row in grid.locator("[role='row']").all() if row.locator("[role='gridcell']").count()]
            i = first.index(derived.parent)
            assert first[i:i + 4] == [derived.parent, "↳ +int8", "↳ +prune0.5", "↳ +int8"], first
            assert_healthy(page)
            screenshot(page, out_dir / "leaderboard_derived.png")
        finally:
            context.close()
    assert "Traceback" not in log.read_text(errors="replace")


def test_drilldown_click_a_matrix_cell_then_a_scatter_point_opens_the_image(page, dashboard_data, out_dir):
    kept, recomputed = (dashboard_data.results[v]["evaluation_id"] for v in dashboard_data.variants)
    open_page(page, "drilldown")
    choose(page, "Evaluation A", next(o for o in _options(page, "Evaluation A") if o.endswith(f"#{kept}")))
    choose(page, "Evaluation B (same images)",
           next(o for o in _options(page, "Evaluation B (same images)") if o.endswith(f"#{recomputed}")))
    matrix = page.locator("[data-testid='stPlotlyChart']").first
    page.wait_for_selector("[data-testid='stPlotlyChart'] .main-svg")
    cells = matrix.locator(".scatterlayer path.point")
    expect(cells).to_have_count(19 * 19)
    click_point(page, matrix, cells.nth(0))  # ground truth road, predicted road: every image has some
    heading = page.get_by_text("Ground truth road predicted as road")
    rerun_after(page, heading)
    expect(page.locator("[data-testid='stDataFrame']")).to_have_count(2)  # the cell's images, the per-class table
    assert_healthy(page)
    screenshot(page, out_dir / "drilldown_overview.png")
    scatter = page.locator("[data-testid='stPlotlyChart']").nth(1)
    click_point(page, scatter, scatter.locator(".scatterlayer path.point").first)
    rerun_after(page, page.get_by_text("A: mIoU of this image"))
    expect(page.get_by_role("tab", name="Image", exact=True)).to_have_attribute("aria-selected", "true")
    images = page.locator("[data-testid='stImage']")
    expect(images).to_have_count(6)  # image, ground truth, A, B, and the errors of each
    expect(page.get_by_text("kept by the evaluation")).to_be_visible()
    expect(page.get_by_text(re.compile("recomputed on cpu"))).to_be_visible()
    assert_healthy(page)
    screenshot(page, out_dir / "drilldown_image.png")


def _options(page: Page, label: str) -> list[str]:
    """The options of a selectbox (opened and closed again)."""
    page.get_by_role("combobox", name=label, exact=True).click()
    options = page.get_by_role("option").all_inner_texts()
    page.keyboard.press("Escape")
    return options


def test_server_logged_no_traceback(app):
    """Runs last: nothing above made the server log an exception."""
    log = app[2].read_text(errors="replace")
    assert "Traceback" not in log, log[-5000:]
