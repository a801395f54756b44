"""Typed statements for people (``sql/queries/inspection.sql``)."""

from __future__ import annotations

from collections.abc import Sequence

from omnispindle._db.query import Query, first_or_none, rows
from omnispindle._db.rows import (
    QueueSummaryRow,
    RetriedTask,
    TaskDetail,
    TaskListRow,
    TaskStateRow,
    WorkerSummaryRow,
)
from omnispindle._db.statements import RUNTIME


def list_tasks(
    *,
    task_types: Sequence[str] | None,
    states: Sequence[str] | None,
    older_than: float | None,
    limit: int,
) -> Query[list[TaskListRow]]:
    """The newest tasks matching every filter given (None matches all)."""
    return Query(
        RUNTIME["list_tasks"],
        {
            "task_types": None if task_types is None else list(task_types),
            "states": None if states is None else list(states),
            "older_than": older_than,
            "limit": limit,
        },
        rows,
    )


def show_task(task_id: int) -> Query[TaskDetail | None]:
    """One task in full, or None."""
    return Query(RUNTIME["show_task"], {"id": task_id}, first_or_none)


def task_states(ids: Sequence[int]) -> Query[list[TaskStateRow]]:
    """The current state of each task that exists among ``ids``."""
    return Query(RUNTIME["task_states"], {"ids": list(ids)}, rows)


def retry_tasks(ids: Sequence[int], with_dependents: bool) -> Query[list[RetriedTask]]:
    """Run failed tasks again, all or nothing (``omnispindle.retry_tasks``), and with
    ``with_dependents`` the dependents their failures cancelled."""
    return Query(
        RUNTIME["retry_tasks"], {"ids": list(ids), "with_dependents": with_dependents}, rows
    )


def queue_summary() -> Query[list[QueueSummaryRow]]:
    """Tasks per type and state, and the wait of each type's oldest ready task."""
    return Query(RUNTIME["queue_summary"], None, rows)


def worker_summary() -> Query[list[WorkerSummaryRow]]:
    """Every worker as ``omnispindle status`` shows it."""
    return Query(RUNTIME["worker_summary"], None, rows)
