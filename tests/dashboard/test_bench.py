"""``omnispindle bench dashboard`` on a small table: every figure is measured."""

from __future__ import annotations

import pytest

from omnispindle.bench import dashboard as bench_dashboard
from omnispindle.bench import first_paint

TIMED = (*bench_dashboard.PAGES, "rollup_first_ms", "rollup_next_ms")


def test_each_page_is_timed_and_the_tasks_are_removed(queue, conn, monkeypatch):
    monkeypatch.setattr(first_paint, "chromium", lambda: None)
    figures = bench_dashboard.dashboard(queue, tasks=2_000, runs=2)
    assert all(figures[name] > 0 for name in TIMED), figures
    assert figures["first_paint"].startswith("not measured: no Chromium")
    assert conn.execute("SELECT count(*) FROM omnispindle.tasks").fetchone()[0] == 0


@pytest.mark.browser
def test_a_browser_draws_each_page(queue):
    if first_paint.chromium() is None:
        pytest.skip("no Chromium (apt-get install chromium)")
    figures = bench_dashboard.dashboard(queue, tasks=2_000, runs=2)
    for page in bench_dashboard.PAINTED:
        assert 0 < figures[f"{page}_first_paint_ms"] < 10_000, figures
