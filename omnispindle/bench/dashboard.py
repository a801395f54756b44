"""``omnispindle bench dashboard``: how long the dashboard's pages take on a large table.

It fills the tasks table in one statement, runs the outcome rollup as a
sweeper would (timing its first pass, which counts the whole hour, and the
next, which counts what a sweeper's pass usually does), then times requests to
the dashboard app in this process (the ASGI call, database included, no
network), and reports the median of several of each; then, where a Chromium
is installed, how soon a browser draws the overview and a filtered list.

Tasks it fills with finished_at before an earlier pass's watermark (a database
where sweepers ran in the last hour) are never rolled up: the times hold, but
the pages then show fewer of them.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

from starlette.types import ASGIApp, Message

from omnispindle._maintenance import rollup
from omnispindle.bench import queries as bq
from omnispindle.bench.first_paint import first_paint_ms
from omnispindle.dashboard import app
from omnispindle.task_queue import TaskQueue

# What each figure times: a page of the dashboard, by path.
PAGES = {
    "overview_ms": "/",
    "series_ms": "/series",
    "list_ms": "/tasks",
    "filtered_list_ms": "/tasks?type=bench_dash_4&state=failed",
    "text_search_ms": "/tasks?text=customer-421%7D",
    "list_deep_page_ms": "/tasks?before=500000&state=failed",
}
# The pages whose first paint in a browser is measured.
PAINTED = {"overview": "/", "filtered_list": PAGES["filtered_list_ms"]}


def dashboard(queue: TaskQueue, tasks: int = 1_000_000, runs: int = 7) -> dict[str, Any]:
    """Fill ``tasks`` tasks, then time each page ``runs`` times (after one warm-up)."""
    queue.db.run(bq.fill_dashboard(tasks))
    queue.db.run(bq.vacuum_tasks())
    try:
        passes = {name: _pass_ms(queue) for name in ("rollup_first_ms", "rollup_next_ms")}
        site = app(queue.dsn, schema=queue.namespace.name)
        figures = {name: _median_ms(site, path, runs) for name, path in PAGES.items()}
        figures.update(first_paint_ms(site, PAINTED, runs))
    finally:
        queue.db.run(bq.delete_dashboard())
        queue.db.run(bq.delete_dashboard_outcomes())
    return {"scenario": "dashboard", "tasks": tasks, "runs": runs, **passes, **figures}


def _pass_ms(queue: TaskQueue) -> float:
    """The time of one rollup pass, in milliseconds."""
    started = time.perf_counter()
    rollup.roll_up(queue.db)
    return (time.perf_counter() - started) * 1000


def _median_ms(site: ASGIApp, path: str, runs: int) -> float:
    """The median time of a GET of ``path``, in milliseconds."""
    _get(site, path)  # a warm-up: connections, statements, cache
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        _get(site, path)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def _get(site: ASGIApp, path: str) -> None:
    """One GET through the ASGI interface.

    Raises:
        RuntimeError: the page did not answer 200.
    """
    route, _, query = path.partition("?")
    scope = {
        "type": "http",
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": route,
        "raw_path": route.encode(),
        "root_path": "",
        "query_string": query.encode(),
        "headers": [(b"host", b"bench")],
        "client": ("127.0.0.1", 1),
        "server": ("bench", 80),
    }
    statuses: list[int] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    asyncio.run(site(scope, receive, send))  # type: ignore[arg-type]
    if statuses != [200]:
        raise RuntimeError(f"GET {path} answered {statuses}")
