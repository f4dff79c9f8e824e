"""Headless Chromium through Playwright: Debian's /usr/bin/chromium (or $CHROMIUM), never a
downloaded browser. The report's PDF, the screenshots and the browser tests launch it here."""
from __future__ import annotations

import os

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]


def executable(path: str | None = None) -> str:
    """`path`, else $CHROMIUM, else Debian's Chromium (whether it exists is the caller's to check)."""
    return path or os.environ.get("CHROMIUM") or CHROMIUM


def launch(playwright, path: str | None = None):
    """A headless Chromium browser of this Playwright instance."""
    return playwright.chromium.launch(executable_path=executable(path), headless=True, args=CHROMIUM_ARGS)
