"""How soon a browser draws each dashboard page: the first contentful paint in
headless Chromium, of the app served by uvicorn on a free local port.

Measured only where Playwright and a Chromium are installed; the figures then
say what was missing instead.
"""

from __future__ import annotations

import os
import shutil
import socket
import statistics
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from starlette.types import ASGIApp

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
FIRST_PAINT = (
    "() => new Promise(done => new PerformanceObserver((seen, observer) => {"
    " const paint = seen.getEntriesByName('first-contentful-paint')[0];"
    " if (paint) { observer.disconnect(); done(paint.startTime); }"
    "}).observe({type: 'paint', buffered: true}))"
)


def chromium() -> str | None:
    """The Chromium to drive: ``$OMNISPINDLE_CHROMIUM``, else one on the PATH."""
    given = os.environ.get("OMNISPINDLE_CHROMIUM")
    if given:
        return given
    return next((found for name in CHROMIUM_NAMES if (found := shutil.which(name))), None)


def first_paint_ms(site: ASGIApp, pages: Mapping[str, str], runs: int) -> dict[str, Any]:
    """The median first contentful paint of each page, by name, in milliseconds."""
    executable = chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return {"first_paint": "not measured: Playwright is not installed"}
    if executable is None:
        return {"first_paint": "not measured: no Chromium (set $OMNISPINDLE_CHROMIUM)"}
    with served(site) as base, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            return {
                f"{name}_first_paint_ms": _median_paint(browser, base + path, runs)
                for name, path in pages.items()
            }
        finally:
            browser.close()


def _median_paint(browser: Any, url: str, runs: int) -> float:
    """Each run in a new page, so that nothing is drawn from an earlier one."""
    paints = []
    for _ in range(runs + 1):  # the first warms the server's connections
        page = browser.new_page()
        page.goto(url)
        paints.append(float(page.evaluate(FIRST_PAINT)))
        page.close()
    return statistics.median(paints[1:])


@contextmanager
def served(site: ASGIApp) -> Iterator[str]:
    """``site`` served on a free loopback port until the block ends; its base URL."""
    import uvicorn

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    server = uvicorn.Server(uvicorn.Config(site, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    started = threading.Event()
    while not started.wait(0.05):
        if server.started:
            started.set()
        elif not thread.is_alive():
            raise RuntimeError("the dashboard's server did not start")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
