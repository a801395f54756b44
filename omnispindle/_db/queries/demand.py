"""Typed statements on what the tasks ask of the workers (``sql/queries/demand.sql``)."""

from __future__ import annotations

from omnispindle._db.query import Query, rows, value
from omnispindle._db.rows import TypeDemand, UnclaimableTasks
from omnispindle._db.statements import RUNTIME


def workers_needed(
    concurrency: int, min_workers: int, max_workers: int, task_types: list[str] | None
) -> Query[int]:
    """The worker processes a deployment of this concurrency should run now."""
    params = {
        "concurrency": concurrency,
        "min_workers": min_workers,
        "max_workers": max_workers,
        "task_types": task_types,
    }
    return Query(RUNTIME["workers_needed"], params, value("workers"))


def worker_demand() -> Query[list[TypeDemand]]:
    """Each task type with unfinished tasks: how many of them could run at once now."""
    return Query(RUNTIME["worker_demand"], None, rows)


def unclaimable_tasks() -> Query[list[UnclaimableTasks]]:
    """Ready tasks no live worker can run for want of a capability, by type and by
    the capabilities they need, the most first."""
    return Query(RUNTIME["unclaimable_tasks"], None, rows)
