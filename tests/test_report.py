"""The shareable report (dashboard/report.py): its HTML, opened in a real headless Chromium with the
network blocked, and its PDF, read back with pypdf.

Most tests read a small store written by hand with known figures (three evaluated models of which
one is an INT8 variant, a failed run, a run on another dataset, corruption sweeps, a foggy
evaluation, a published result, kept predictions that differ on known shares of pixels of real
synthetic images), so that every figure the report prints can be checked. One writes a run to the
throwaway PostgreSQL server (tests/postgres.py) under a URL with a password, which the report must
hide. The last reads `dashboard_data`, a store the engine wrote by training and evaluating real
models (the session fixture the dashboard tests share: minutes to build when this file runs alone).

The browser and PDF tests need Debian's /usr/bin/chromium (or $CHROMIUM): skipped without it,
failed without it on CI.
"""
from __future__ import annotations

import os
import re
import shutil
from html import escape, unescape

import numpy as np
import pytest
from sqlalchemy.engine import make_url

from dashboard.browser import launch
from dashboard.report import ReportError, build_report, write_pdf, write_report
from engine.classes import CLASS_NAMES
from engine.data import open_dataset
from engine.data.synthetic import write_synthetic_dataset
from engine.evaluate import write_label_png
from engine.metrics import ImageResult, Metrics
from engine.profiling import Profile
from engine.recommend import Budget
from engine.store import Store

DATE = "1 December 2026"
SETUP = "Test CPU (CPU, 2 threads), 1024x512, batch 1"
CHARTS = 8  # mIoU vs latency, vs size, mPC vs latency, mIoU vs params; mPC/rPC, groups; domain shift; per class
ALPHA_REASON = ("alpha_net: the highest clean mIoU (0.620) among all 3 evaluated models (no limit set); 2.0 points "
                "above the next, alpha_net_int8 (0.600).")
SHARES = (0.125, 0.5, 0.0)  # of the pixels where beta_net's kept labels differ from alpha_net's, per val image


def _metrics(miou: float, n: int = 3) -> Metrics:
    return Metrics(miou=miou, pixel_accuracy=0.9, per_class_iou={c: miou for c in CLASS_NAMES}, num_images=n)


def _profile(size_mb: float, latency_ms: float, precision: str = "fp32") -> Profile:
    return Profile(params=40_000_000, size_mb=size_mb, gflops=100.0, latency_ms=latency_ms, device="Test CPU",
                   threads=2, precision=precision, resolution="1024x512")


def _run(store, variant, arch, dataset="synthetic", **kw) -> int:
    return store.start_run(variant=variant, arch=arch, backbone="b", profile="quick", hyperparameters={},
                           dataset=dataset, data_root="/data", train_images=1, val_images=3, device="Test CPU",
                           code_version="0.1.0+test", uid=f"{variant}-uid", **kw)


def _kept(tmp, name: str, data, change_rows: list[int]) -> tuple[str, list[ImageResult]]:
    """Kept predictions of every val image: the ground truth (ignore as road) with its first
    `change_rows[i]` rows moved to the next class; and the images' rows."""
    folder, rows = tmp / name, []
    folder.mkdir()
    for i, sample in enumerate(data.samples):
        _, gt = data.load(i)
        labels = np.where(gt == 255, 0, gt).astype(np.uint8)
        labels[:change_rows[i]] = (labels[:change_rows[i]] + 1) % len(CLASS_NAMES)
        write_label_png(folder / f"{sample.stem}.png", labels)
        zeros = np.zeros((19, 19), np.int64)
        rows.append(ImageResult(i, sample.stem, "city", f"val/{sample.stem}.png", gt.shape[1], gt.shape[0], 1, zeros,
                                zeros))
    return str(folder), rows


def _evaluate(store, run_id, variant, miou, profiles=(), **kw) -> int:
    return store.record_evaluation(run_id=run_id, variant=variant, checkpoint=f"/w/{variant}.pt",
                                   checkpoint_sha256="ab" * 32, dataset=kw.pop("dataset", "synthetic"), split="val",
                                   eval_size="128x64", metrics=_metrics(miou), profiles=list(profiles), **kw)


def _sweep(store, run_id, variant, clean, noise, weather) -> None:
    results = [{"corruption": c, "group": g, "severity": 3, "metrics": _metrics(v)}
               for c, g, v in (("gaussian_noise", "noise", noise), ("fog", "weather", weather))]
    mpc = (noise + weather) / 2
    store.record_robustness(run_id=run_id, variant=variant, checkpoint=f"/w/{variant}.pt",
                            checkpoint_sha256="ab" * 32, dataset="synthetic", split="val", eval_size="128x64",
                            library="test-corruptions 1.0", clean=_metrics(clean), mpc=mpc, rpc=mpc / clean,
                            groups={"noise": noise, "weather": weather}, results=results)


@pytest.fixture(scope="module")
def hand(tmp_path_factory):
    """A store written by hand with known figures; returns (store, {variant: run id}, val stems)."""
    tmp = tmp_path_factory.mktemp("report")
    root = tmp / "synthetic"
    write_synthetic_dataset(root, train=1, val=3, size=(128, 64), seed=0)
    data = open_dataset("cityscapes", root, "val")
    height = data.load(0)[1].shape[0]
    store = Store(f"sqlite:///{tmp / 'results.db'}")
    source = {"kind": "cityscapes", "root": str(root), "label_format": None}
    ids = {}
    for variant, arch, miou, size, latency, changed in (("alpha_net", "deeplabv3_r50", 0.62, 160.0, 80.0, None),
                                                        ("beta_net", "unet", 0.55, 30.0, 20.0, SHARES)):
        ids[variant] = _run(store, variant, arch)
        store.finish_run(ids[variant], status="completed")
        kept, images = _kept(tmp, variant, data, [round(s * height) for s in changed or (0, 0, 0)])
        _evaluate(store, ids[variant], variant, miou, [_profile(size, latency)], images=images, source=source,
                  predictions_dir=kept)
    ids["alpha_net_int8"] = _run(store, "alpha_net_int8", "deeplabv3_r50", parent_run_id=ids["alpha_net"],
                                 derivation={"method": "int8"})
    store.finish_run(ids["alpha_net_int8"], status="completed")
    _evaluate(store, ids["alpha_net_int8"], "alpha_net_int8", 0.60, [_profile(41.0, 32.0, "int8")])
    _sweep(store, ids["alpha_net"], "alpha_net", 0.62, 0.5, 0.3)
    _sweep(store, ids["beta_net"], "beta_net", 0.55, 0.5, 0.38)
    for variant, miou in (("alpha_net", 0.31), ("beta_net", 0.44)):
        _evaluate(store, ids[variant], variant, miou, dataset="synthetic-acdc", condition="fog")
    ids["gamma_net"] = _run(store, "gamma_net", "hrnetv2_w48")
    store.finish_run(ids["gamma_net"], status="failed", error="diverged")
    ids["city_net"] = _run(store, "city_net", "unet", dataset="cityscapes")
    store.finish_run(ids["city_net"], status="completed")
    _evaluate(store, ids["city_net"], "city_net", 0.7, [_profile(30.0, 20.0)], dataset="cityscapes")
    store.load_published([{"key": "papernet", "model": "PaperNet <R50>", "arch": "deeplabv3_r50", "miou": 0.79,
                           "params": 40_000_000, "gflops": 270.0, "gflops_resolution": "2048x1024",
                           "source": "Paper & Co 2020", "url": "https://example.org/papernet"}])
    yield store, ids, [s.stem for s in data.samples]
    store.close()


@pytest.fixture(scope="module")
def report(hand) -> str:
    return build_report(hand[0], date=DATE)


@pytest.fixture(scope="module")
def chromium() -> str:
    path = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    if not (os.path.isfile(path) or shutil.which(path)):
        if os.environ.get("CI"):  # CI installs it (scripts/install-chromium.sh): its absence is a failure there
            pytest.fail(f"no Chromium at {path} on CI", pytrace=False)
        pytest.skip(f"no Chromium at {path} (apt-get install chromium, or set $CHROMIUM)")
    return path


def _text(html: str) -> str:
    """The document's visible words (tags, scripts and styles dropped), whitespace collapsed."""
    body = re.sub(r"<(script|style)\b.*?</\1>", " ", html, flags=re.S)
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", body)))


def test_same_store_and_date_give_the_same_bytes(hand, report):
    store = hand[0]
    assert build_report(store, date=DATE) == report
    undated = build_report(store)
    assert DATE not in undated and DATE in report
    assert build_report(store) == undated


def test_report_says_what_it_recommends_and_on_what(hand, report):
    store, ids, _ = hand
    text = _text(report)
    assert "Recommended: alpha_net " in text and escape(ALPHA_REASON) in report
    assert "trained and evaluated on synthetic street scenes, not Cityscapes" in text
    assert "city_net" not in text  # another dataset
    assert "Not in this report: gamma_net (failed)." in text
    assert f"Results store: {store.url}." in text
    assert "GFLOPs at 1024x512" in text and f"Latency (ms) on {SETUP} Precision" in text
    for variant, run_id in ids.items():  # the runs shown, with their ids and uids
        shown = variant not in ("gamma_net", "city_net")
        assert (f" {run_id} {variant}-uid {variant} Test CPU 0.1.0+test " in text) == shown


def test_tables_carry_the_stored_figures(report):
    text = _text(report)
    assert ("1 alpha_net trained 0.620 0.400 64.5% 40.0 160.0 100.00 80.0 fp32 "
            "2 ↳ _int8 INT8 0.600 – – 40.0 41.0 100.00 32.0 int8 "  # under its parent; INT8; no sweep
            "3 beta_net trained 0.550 0.440 80.0% 40.0 30.0 100.00 20.0 fp32") in text
    assert "alpha_net_int8 alpha_net INT8 0.600 -0.020 41.0 x0.26 32.0 x0.40" in text  # Δ against the parent
    assert "alpha_net 0.620 0.310 (50%)" in text and "beta_net 0.550 0.440 (80%)" in text  # retention on fog
    assert "beta_net 0.550 0.440 80.0% 0.500 0.380" in text  # clean, mPC, rPC, noise, weather
    assert "PaperNet <R50> 0.790 40.0 270 at 2048x1024" in text
    assert "PaperNet &lt;R50&gt;" in report and "PaperNet <R50>" not in report  # escaped, in the table and charts
    assert '<a href="https://example.org/papernet">Paper &amp; Co 2020</a>' in report


def test_charts_are_inline_and_numbered(report):
    assert report.count('class="plotly-graph-div"') == CHARTS
    assert [int(n) for n in re.findall(r'<div id="report-fig-(\d+)"', report)] == list(range(1, CHARTS + 1))
    assert report.count("<script") == CHARTS + 1  # plotly.js once, then one call per chart
    assert not re.search(r"<(link|script)[^>]+(src|href)=", report) and "@import" not in report


def test_examples_are_the_images_the_two_best_disagree_on_most(hand, report):
    _, _, stems = hand
    text = _text(report)
    shown = re.findall(r"(\S+): the models disagree on ([\d.]+)% of the pixels", text)
    assert shown == [(stems[1], "50.0"), (stems[0], "12.5")]
    assert report.count('<img alt="" src="data:image/png;base64,') == 4 * 2  # image, A, B, disagreement
    assert "A: alpha_net (evaluation #1), B: beta_net (evaluation #2)" in text


def test_run_ids_and_budget_choose_what_is_shown(hand):
    store, ids, _ = hand
    only = build_report(store, run_ids=[ids["beta_net"]], date=DATE)
    text = _text(only)
    assert "alpha_net" not in text and "Recommended: beta_net " in text
    assert "No examples: two models need kept predictions" in text
    assert only.count('class="plotly-graph-div"') == CHARTS
    budget = build_report(store, budget=Budget(max_size_mb=50), date=DATE)
    assert escape("alpha_net_int8: the highest clean mIoU (0.600) among the 2 of 3 models with checkpoint size (MB) "
                  "≤ 50; 5.0 points above the next, beta_net (0.550).") in budget
    assert "Excluded: alpha_net (checkpoint size (MB) 160 > 50)." in _text(budget)


def test_nothing_to_report_is_a_clear_error(hand, tmp_path):
    with Store(f"sqlite:///{tmp_path / 'empty.db'}") as empty, pytest.raises(ReportError, match="no evaluated run"):
        build_report(empty)
    with pytest.raises(ReportError, match="none of the runs"):
        build_report(hand[0], run_ids=[hand[1]["gamma_net"]])


def test_store_password_never_shows(pg_database):
    url = make_url(pg_database).set(password="s3cret-pw").render_as_string(hide_password=False)
    with Store(url) as store:  # the throwaway server trusts every password
        run_id = _run(store, "pg_net", "unet")
        store.finish_run(run_id, status="completed")
        _evaluate(store, run_id, "pg_net", 0.5, [_profile(30.0, 20.0)])
        html = build_report(store)
    assert "s3cret-pw" not in html
    assert f"Results store: {make_url(url).render_as_string(hide_password=True)}." in _text(html)
    assert "Recommended: pg_net " in _text(html)


def test_pdf_without_chromium_says_how_to_install_it(tmp_path):
    with pytest.raises(ReportError, match="scripts/install-chromium.sh"):
        write_pdf("<html></html>", tmp_path / "r.pdf", chromium=str(tmp_path / "no-chromium"))


def test_report_renders_offline_in_chromium(report, chromium, tmp_path):
    from playwright.sync_api import sync_playwright

    path = tmp_path / "report.html"
    path.write_text(report, encoding="utf-8")
    errors, failed, blocked = [], [], []
    with sync_playwright() as p:
        browser = launch(p, chromium)
        try:
            page = browser.new_page()
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("requestfailed", lambda r: failed.append(r.url))

            def offline(route):
                if route.request.url.startswith(("file:", "data:", "about:")):
                    route.continue_()
                else:
                    blocked.append(route.request.url)
                    route.abort()

            page.route("**/*", offline)
            page.goto(path.as_uri(), wait_until="load")
            page.wait_for_function("() => [...document.querySelectorAll('.plotly-graph-div')]"
                                   ".every(d => d.querySelector('svg.main-svg'))", timeout=60_000)
            charts = page.locator(".plotly-graph-div")
            assert charts.count() == CHARTS
            assert page.locator(".plotly-graph-div svg.main-svg").count() >= CHARTS
            assert all(charts.nth(i).locator("svg.main-svg").count() for i in range(CHARTS))
            assert page.locator("img[src^='data:image/png']").evaluate_all(
                "imgs => imgs.every(i => i.complete && i.naturalWidth > 0)")
        finally:
            browser.close()
    assert not errors and not failed and not blocked, (errors, failed, blocked)


def test_pdf_has_the_recommendation(hand, chromium, tmp_path):
    from pypdf import PdfReader

    out = write_report(hand[0], tmp_path / "r.html", tmp_path / "r.pdf", date=DATE)
    assert out["recommended"] == "alpha_net" and out["runs"] == [hand[1][v] for v in ("alpha_net", "alpha_net_int8",
                                                                                       "beta_net")]
    assert out["html"].read_text(encoding="utf-8") == build_report(hand[0], date=DATE)
    pdf = PdfReader(out["pdf"])
    text = re.sub(r"\s+", " ", " ".join(page.extract_text() for page in pdf.pages))
    assert len(pdf.pages) >= 1
    assert "Recommended: alpha_net" in text and ALPHA_REASON[:60] in text


def test_report_of_a_store_the_engine_wrote(dashboard_data):
    with Store(dashboard_data.db) as store:
        html = build_report(store, date=DATE)
        assert build_report(store, date=DATE) == html
    text = _text(html)
    assert all(v in text for v in dashboard_data.variants)
    assert "trained and evaluated on synthetic street scenes, not Cityscapes" in text
    assert "Not in this report: hrnetv2_w48_sgd (failed)." in text
    assert "No examples: two models need kept predictions" in text  # one of the two kept its predictions
    assert html.count('class="plotly-graph-div"') >= 4
