"""What each page shows, read through the library's operations and the views."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from omnispindle._client import operations
from omnispindle._client.inspection import task_detail
from omnispindle._db import queries as q
from omnispindle._db.queries.dashboard import TaskFilter
from omnispindle._db.rows import (
    DashboardWorkerRow,
    OverviewRow,
    ScheduleSummary,
    StreamRow,
    TaskDetail,
    TaskListRow,
)
from omnispindle.dashboard.filters import MAX_TASK_ID
from omnispindle.dashboard.graph import Layout, layout
from omnispindle.dashboard.source import Source
from omnispindle.errors import TaskNotFoundError

PAGE_SIZE = 50
MOST_EXAMINED = 20_000  # tasks one page of a filtered list reads at most
MOST_WORKERS = 500
MOST_GRAPH_NODES = 200
MOST_PARTIALS = 50  # the newest partial results a task's page shows
STATE_COLUMNS = ("blocked", "pending", "running", "succeeded", "failed", "cancelled")


@dataclass(frozen=True, slots=True)
class Overview:
    """Counts per task type and state, and the totals over all types: unfinished
    tasks now, finished ones (succeeded, failed, cancelled) in the last hour;
    ``unclaimable``: ready tasks no live worker can run for want of a capability."""

    types: list[OverviewRow]
    totals: dict[str, int]
    oldest_ready_seconds: float | None
    unclaimable: int


@dataclass(frozen=True, slots=True)
class TaskPage:
    """One page of the task list; ``next_before``: the cursor of the next, if any;
    ``looked_through``: for a page a filter left short, how many tasks it read."""

    rows: list[TaskListRow]
    next_before: int | None
    looked_through: int | None = None


@dataclass(frozen=True, slots=True)
class Partials:
    """The newest partial results of a task, oldest of them first, and how many it
    streamed in all."""

    newest: list[StreamRow]
    streamed: int


@dataclass(frozen=True, slots=True)
class TaskView:
    """A task in full, the workflow around it, and its streamed partial results
    (None when the dashboard's role may not read them)."""

    task: TaskDetail
    graph: Layout
    partials: Partials | None


def overview(source: Source) -> Overview:
    """The queue at a glance. Not from queue_summary: it counts every task ever
    kept, reading the whole table; this reads the backlog and the last hour."""
    types = source.read(q.dashboard.overview())
    columns = (*STATE_COLUMNS, "expired_leases")
    counts = [cast(Mapping[str, int], row) for row in types]
    totals = {name: sum(row[name] for row in counts) for name in columns}
    waits = [row["oldest_ready_seconds"] for row in types if row["oldest_ready_seconds"]]
    unclaimable = sum(row["ready"] for row in source.read(q.demand.unclaimable_tasks()))
    return Overview(types, totals, max(waits, default=None), unclaimable)


def series(source: Source) -> dict[str, list[Any]]:
    """Per-minute outcomes over the last hour, as the columns uPlot draws."""
    minutes = source.read(q.dashboard.outcome_series())
    names = ("minute", "succeeded", "failed", "retried")
    columns = [cast(Mapping[str, int], row) for row in minutes]
    return {name: [row[name] for row in columns] for name in names}


def workers(source: Source) -> list[DashboardWorkerRow]:
    """Registered workers, active ones first."""
    return source.read(q.dashboard.workers(MOST_WORKERS))


def task_page(source: Source, task_filter: TaskFilter, before: int | None) -> TaskPage:
    """A page of matching tasks below the cursor; one row more tells if another follows.

    A filtered page reads at most the ``MOST_EXAMINED`` newest tasks below the
    cursor: one that finds fewer matches than a page holds ends there, and the
    next page goes on below them.
    """
    span = None
    if task_filter != TaskFilter():
        span = source.read(q.dashboard.scan_floor(before=before, examine=MOST_EXAMINED))
    floor = span["floor"] if span else None
    found = source.read(
        q.dashboard.task_page(task_filter, before=before, limit=PAGE_SIZE + 1, floor=floor)
    )
    shown = found[:PAGE_SIZE]
    if len(found) > PAGE_SIZE:
        return TaskPage(shown, shown[-1]["task_id"])
    if span is not None and span["examined"] == MOST_EXAMINED:
        return TaskPage(shown, floor, looked_through=MOST_EXAMINED)
    return TaskPage(shown, None)


def task_view(source: Source, task_id: int) -> TaskView:
    """A task, its workflow and its partial results.

    Raises:
        TaskNotFoundError: no task has this id.
    """
    # The route's int has no bound, and the database would refuse one beyond a bigint.
    if task_id > MAX_TASK_ID:
        raise TaskNotFoundError(f"no task with id {task_id}")
    task = source.read(task_detail(task_id))
    nodes = source.read(q.dashboard.task_graph(task_id, MOST_GRAPH_NODES))
    # The partials after the state: a task shown finished shows all of them.
    return TaskView(task, layout(nodes, task_id), _partials(source, task_id))


def _partials(source: Source, task_id: int) -> Partials | None:
    """A task's newest partial results; None for a role that may not read them. They
    are read from the table, which observer access does not grant (the views are)."""
    if not source.read(q.dashboard.partials_readable()):
        return None
    newest = source.read(q.dashboard.newest_partials(task_id, MOST_PARTIALS))
    # Sequence numbers count from 1 without a gap: the newest is the number streamed.
    return Partials(newest, newest[-1]["seq"] if newest else 0)


def schedules(source: Source) -> list[ScheduleSummary]:
    """Periodic schedules with their last and next ticks."""
    return source.read(operations.list_schedules())
