"""Debian's chromium driven by Playwright (sync API) for the dashboard's browser tests.

No browser is ever downloaded: Playwright launches /usr/bin/chromium (``apt-get install chromium``;
.ci/run installs it when it is missing). A missing chromium fails the tests, it does not skip them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

from tests.host_support import REPO

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-quic",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS_SETTING = "DURABLE_EXT_SCREENSHOTS"
"""Set to 1 to make the browser tests write the README's screenshots into docs/images/."""
IMAGES = REPO / "docs" / "images"
KEY_STORAGE = "durable_ext.dashboard.key"
"""The sessionStorage entry the page keeps the system key in (see static/js/api.js)."""


@contextmanager
def launched_chromium() -> Iterator[Browser]:
    """Debian's chromium, headless; closed afterwards. Playwright gives each launch a fresh temporary
    profile, so nothing carries over from an earlier run."""
    assert CHROMIUM.exists(), (
        f"{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium)"
    )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def browser_page(browser: Browser, key: str | None = None) -> Iterator[Page]:
    """A page in a new browser context; with ``key``, the context's tabs start with it entered."""
    context: BrowserContext = browser.new_context(viewport={"width": 1400, "height": 1000})
    if key is not None:
        context.add_init_script(f"sessionStorage.setItem({KEY_STORAGE!r}, {key!r})")
    page = context.new_page()
    try:
        yield page
    finally:
        context.close()


def screenshot(page: Page, name: str) -> None:
    """Save the page as docs/images/NAME when DURABLE_EXT_SCREENSHOTS=1 (the README shows them)."""
    if os.environ.get(SCREENSHOTS_SETTING) == "1":
        IMAGES.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(IMAGES / name), full_page=False)
