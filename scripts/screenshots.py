"""Screenshots of every dashboard page, taken in a real headless Chromium.

    python scripts/screenshots.py OUT_DIR [--width 1400]

Uses RESULTS_DB / WEIGHTS_DIR like the app (e.g. the results of `make demo`) and Debian's
/usr/bin/chromium (or $CHROMIUM). The README's screenshots were taken with it.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from playwright.sync_api import sync_playwright  # noqa: E402

from dashboard import server  # noqa: E402
from dashboard.browser import launch  # noqa: E402

PAGES = {"leaderboard": "", "tradeoffs": "tradeoffs", "report": "report", "per_class": "per_class", "robustness": "robustness",
         "compare": "compare", "drilldown": "drilldown", "coverage": "coverage"}


def wait_idle(page, timeout_ms: int = 120_000) -> None:
    """Until the app has finished its current script run."""
    page.wait_for_selector("[data-testid='stApp']", timeout=timeout_ms)
    page.wait_for_timeout(300)
    page.wait_for_selector("[data-testid='stApp'][data-test-script-state='notRunning']", timeout=timeout_ms)
    page.wait_for_timeout(500)


def toggle(page, label: str) -> None:
    page.get_by_text(label, exact=True).click()
    wait_idle(page)


def choose(page, label: str, option: str) -> None:
    """Pick `option` in the selectbox labelled `label`."""
    page.get_by_role("combobox", name=label, exact=True).click()
    page.get_by_role("option", name=option, exact=True).click()
    wait_idle(page)


def corrupt(page, corruption: str) -> None:
    """Compare: switch on "Apply a corruption" and pick NAME:SEVERITY (e.g. fog:3)."""
    name, _, severity = corruption.partition(":")
    toggle(page, "Apply a corruption")
    from engine.robustness import group_of

    choose(page, "Corruption", f"{group_of(name)} · {name.replace('_', ' ')}")
    if severity:
        slider = page.get_by_role("slider", name="Severity")
        slider.focus()
        for _ in range(5):  # the slider starts at 3: down to 1, then up to the severity
            page.keyboard.press("ArrowLeft")
        for _ in range(int(severity) - 1):
            page.keyboard.press("ArrowRight")
        wait_idle(page)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--width", type=int, default=1400)
    ap.add_argument("--height", type=int, default=900)
    ap.add_argument("--full", action="store_true", help="the whole page, not just the first screen")
    ap.add_argument("--pages", nargs="+", choices=list(PAGES), default=list(PAGES))
    ap.add_argument("--corruption", metavar="NAME:SEVERITY", default="fog:3",
                    help="Compare also shot with this corruption applied (compare_corrupted.png); '' for none")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    with server.running(log_path=a.out / "streamlit.log") as url, sync_playwright() as p:
        browser = launch(p)
        page = browser.new_page(viewport={"width": a.width, "height": a.height})
        shots = [(name, name) for name in a.pages]
        if "compare" in a.pages and a.corruption:
            shots.append(("compare", "compare_corrupted"))
        for name, shot in shots:
            path = PAGES[name]
            page.goto(f"{url}/{path}")
            wait_idle(page)
            if name == "compare":
                toggle(page, "Use a sample street scene")
            if shot == "compare_corrupted":
                corrupt(page, a.corruption)
            if name == "coverage":
                toggle(page, "Use 8 sample street photos (with EXIF GPS)")
            if page.locator("[data-testid='stPlotlyChart']").count():  # plotly draws after the script run ends
                page.wait_for_selector("[data-testid='stPlotlyChart'] .main-svg", timeout=60_000)
                page.wait_for_timeout(1000)
            if a.full:  # Streamlit scrolls inside its main block: grow the window to the content instead
                height = page.evaluate("document.querySelector('[data-testid=\"stMain\"]').scrollHeight")
                page.set_viewport_size({"width": a.width, "height": max(a.height, int(height))})
                wait_idle(page)
            page.screenshot(path=str(a.out / f"{shot}.png"))
            page.set_viewport_size({"width": a.width, "height": a.height})
            print(a.out / f"{shot}.png")
        browser.close()


if __name__ == "__main__":
    main()
