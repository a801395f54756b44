"""Typed statements of the web dashboard (``sql/queries/dashboard.sql``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from omnispindle._db.query import Query, first, rows, value
from omnispindle._db.rows import (
    DashboardWorkerRow,
    GraphNode,
    MinuteOutcomes,
    OverviewRow,
    ScanFloor,
    StreamRow,
    TaskListRow,
)
from omnispindle._db.statements import RUNTIME


@dataclass(frozen=True, slots=True)
class TaskFilter:
    """What a page of tasks must match; None matches all.

    ``older_than`` and ``newer_than`` are ages in seconds; ``text`` is searched
    for, ignoring case, in the parameters as JSON text.
    """

    task_type: str | None = None
    state: str | None = None
    priority: int | None = None
    older_than: float | None = None
    newer_than: float | None = None
    worker: str | None = None
    text: str | None = None


def task_page(
    task_filter: TaskFilter, *, before: int | None, limit: int, floor: int | None = None
) -> Query[list[TaskListRow]]:
    """At most ``limit`` tasks matching ``task_filter``, newest first, with ids below
    ``before`` (None: from the newest) and not below ``floor`` (None: any)."""
    params = {**asdict(task_filter), "before": before, "limit": limit, "floor": floor}
    return Query(RUNTIME["dashboard_task_page"], params, rows)


def scan_floor(*, before: int | None, examine: int) -> Query[ScanFloor]:
    """The lowest id among the ``examine`` newest tasks below ``before``, and their number."""
    return Query(RUNTIME["dashboard_scan_floor"], {"before": before, "examine": examine}, first)


def outcome_series() -> Query[list[MinuteOutcomes]]:
    """Finished tasks per minute over the last hour, oldest minute first."""
    return Query(RUNTIME["outcome_series"], None, rows)


def overview() -> Query[list[OverviewRow]]:
    """Per task type: unfinished tasks now, finished ones in the last hour."""
    return Query(RUNTIME["dashboard_overview"], None, rows)


def workers(limit: int) -> Query[list[DashboardWorkerRow]]:
    """Registered workers, active ones first, at most ``limit``."""
    return Query(RUNTIME["dashboard_workers"], {"limit": limit}, rows)


def task_graph(task_id: int, limit: int) -> Query[list[GraphNode]]:
    """The tasks linked to ``task_id`` by dependencies, at most ``limit``, by id."""
    return Query(RUNTIME["task_graph"], {"id": task_id, "limit": limit}, rows)


def partials_readable() -> Query[bool]:
    """Whether this role may read partial results (observer access may not)."""
    return Query(RUNTIME["dashboard_partials_readable"], {}, value("readable"))


def newest_partials(task_id: int, limit: int) -> Query[list[StreamRow]]:
    """The ``limit`` newest partial results of ``task_id``, oldest of them first."""
    return Query(RUNTIME["dashboard_partials"], {"id": task_id, "limit": limit}, rows)
