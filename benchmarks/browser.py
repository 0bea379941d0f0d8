"""The dashboard's rendering time in a real browser (issue 19 item 9): Debian's chromium driven by
Playwright's async API against the real dashboard app served by uvicorn in this event loop.

Each figure is the page's own ``performance.now()`` (milliseconds since the navigation started) at the
first animation frame where the awaited elements are in the DOM, so it covers fetching the page, its
scripts, the API answers (server time included) and building the DOM. Without chromium the benchmark
reports why and leaves these figures out; the browser tests fail instead.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import uvicorn
from playwright.async_api import BrowserContext, ViewportSize, async_playwright
from starlette.types import ASGIApp

from benchmarks.harness import BenchmarkError
from benchmarks.stats import percentile
from tests.browser_support import CHROMIUM, CHROMIUM_ARGS

RENDER_SAMPLES = 5
"""Fresh page loads timed per page."""
_VIEWPORT: ViewportSize = {"width": 1400, "height": 1000}

_HISTORY_DONE = """({rows, items}) => {
  const timeline = document.querySelector('[data-testid=timeline]');
  return document.querySelectorAll('[data-testid=history-row]').length >= rows
    && timeline !== null && timeline.dataset.fitted === 'true'
    && timeline.querySelectorAll('.vis-item').length >= items;
}"""
_ROWS_AT_LEAST = "(rows) => document.querySelectorAll('[data-testid=instance-row]').length >= rows"
_CLICK_MORE = """() => {
  const clicked = performance.now();
  document.querySelector('[data-testid=history-more]').click();
  return clicked;
}"""
_HISTORY_ROWS_AT_LEAST = "(rows) => document.querySelectorAll('[data-testid=history-row]').length >= rows"


@dataclass(frozen=True)
class RenderTarget:
    """What the browser opens and waits for."""

    hub_id: str
    instance_id: str
    """The instance whose detail page is timed."""
    list_rows: int
    """Rows the first page of the instance list shows."""
    first_history_rows: int
    """History rows the detail page shows before "Load more history"."""
    history_events: int
    """Every event of the instance's history."""
    timeline_items: int
    """Items the timeline draws at least (vis-timeline leaves out of the DOM what is out of view)."""


def browser_unavailable() -> str | None:
    """Why the browser figures cannot be measured here, or None."""
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing (apt-get install -y chromium)"
    return None


async def render_times(app: ASGIApp, target: RenderTarget, timeout_s: float) -> dict[str, Any]:
    """Milliseconds (p50 and max of :data:`RENDER_SAMPLES` fresh loads) until the instance list's first
    page, and the detail page's first history page and fitted timeline, are in the DOM; and the time
    "Load more history" takes to bring in the rest of the history."""
    async with _served(app) as base, async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context(viewport=_VIEWPORT)
            context.set_default_timeout(timeout_s * 1000)
            list_url = f"{base}/dashboard/#/{target.hub_id}/instances"
            detail_url = f"{base}/dashboard/#/{target.hub_id}/instances/{target.instance_id}"
            done = {"rows": target.first_history_rows, "items": target.timeline_items}
            instances = [
                await _load(context, list_url, _ROWS_AT_LEAST, target.list_rows)
                for _ in range(RENDER_SAMPLES)
            ]
            detail = [await _load(context, detail_url, _HISTORY_DONE, done) for _ in range(RENDER_SAMPLES)]
            more = await _load_all_history(context, detail_url, target)
        finally:
            await browser.close()
    return {
        "browser_instances_p50_ms": percentile(instances, 50),
        "browser_instances_max_ms": max(instances),
        "browser_detail_p50_ms": percentile(detail, 50),
        "browser_detail_max_ms": max(detail),
        "browser_history_rest_ms": more,
        "browser_samples": RENDER_SAMPLES,
    }


async def _load(context: BrowserContext, url: str, condition: str, argument: object) -> float:
    """Open ``url`` in a fresh tab; the page's clock when ``condition(argument)`` first held."""
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        await page.goto(url)
        await page.wait_for_function(condition, arg=argument, polling="raf")
        elapsed = float(await page.evaluate("performance.now()"))
    finally:
        await page.close()
    if errors:
        raise BenchmarkError(f"{url}: the page's scripts failed: {errors}")
    return elapsed


async def _load_all_history(context: BrowserContext, url: str, target: RenderTarget) -> float:
    """Milliseconds from each "Load more history" click to its rows in the DOM, summed over the clicks
    that bring in the whole history."""
    page = await context.new_page()
    try:
        await page.goto(url)
        await page.wait_for_function(_HISTORY_ROWS_AT_LEAST, arg=target.first_history_rows, polling="raf")
        total = 0.0
        while (shown := await page.get_by_test_id("history-row").count()) < target.history_events:
            # Clicked from the page's own script, so the time holds no Playwright round trip.
            clicked = float(await page.evaluate(_CLICK_MORE))
            await page.wait_for_function(_HISTORY_ROWS_AT_LEAST, arg=shown + 1, polling="raf")
            total += float(await page.evaluate("performance.now()")) - clicked
        return total
    finally:
        await page.close()


@asynccontextmanager
async def _served(app: ASGIApp) -> AsyncIterator[str]:
    """``app`` served by uvicorn on a loopback port of its own in this event loop; its base URL."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    serving = asyncio.create_task(server.serve(sockets=[listener]))
    try:
        while not server.started:
            if serving.done():
                serving.result()
                raise BenchmarkError("uvicorn stopped before it started")
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await serving
        listener.close()
