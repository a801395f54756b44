"""Queue metrics: one consistent snapshot of the ``task_metrics`` and ``worker_metrics`` views."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, TypedDict, cast

from omnispindle._db import queries as q
from omnispindle._db.query import Atomic, Plan
from omnispindle._db.rows import (
    PausedTaskType,
    TaskTypeLimit,
    TaskTypeMetrics,
    TypeDemand,
    UnclaimableTasks,
    WorkerCount,
    WorkerMetrics,
)

# Per-type counts that add up over task types.
COUNTS = (
    "blocked",
    "pending",
    "running",
    "succeeded",
    "failed",
    "cancelled",
    "finished_last_minute",
    "succeeded_last_minute",
    "failed_last_minute",
    "cancelled_last_minute",
    "finished_last_hour",
    "succeeded_last_hour",
    "failed_last_hour",
    "cancelled_last_hour",
    "retried_last_hour",
)


class Snapshot(TypedDict):
    """What ``TaskQueue.get_metrics()`` returns (documented there)."""

    task_types: list[TaskTypeMetrics]
    workers: list[WorkerMetrics]
    limits: list[TaskTypeLimit]
    paused: list[str]
    unclaimable: list[UnclaimableTasks]
    totals: dict[str, Any]
    collected_at: datetime


def snapshot() -> Atomic[Snapshot]:
    """Every metric, read in one read-only transaction, so that all figures agree."""
    return Atomic(_read())


def _read() -> Plan[Snapshot]:
    yield q.metrics.begin_metrics_snapshot()
    task_types: list[TaskTypeMetrics] = yield q.metrics.task_type_metrics()
    workers: list[WorkerMetrics] = yield q.metrics.worker_metrics()
    worker_states: list[WorkerCount] = yield q.metrics.worker_counts_by_state()
    limits: list[TaskTypeLimit] = yield q.type_limits.task_type_limits()
    paused: list[PausedTaskType] = yield q.pausing.paused_task_types()
    demand: list[TypeDemand] = yield q.demand.worker_demand()
    unclaimable: list[UnclaimableTasks] = yield q.demand.unclaimable_tasks()
    collected_at: datetime = yield q.metrics.metrics_clock()
    summed = totals(task_types, worker_states)
    summed["demand"] = sum(row["demand"] for row in demand)
    summed["unclaimable"] = sum(row["ready"] for row in unclaimable)
    return {
        "task_types": task_types,
        "workers": workers,
        "limits": limits,
        "paused": [row["task_type"] for row in paused],
        "unclaimable": unclaimable,
        "totals": summed,
        "collected_at": collected_at,
    }


def totals(
    task_types: list[TaskTypeMetrics], worker_states: Iterable[WorkerCount]
) -> dict[str, Any]:
    """Figures over all task types, and the number of workers in each state."""
    counts: list[Mapping[str, int]] = [cast(Mapping[str, int], row) for row in task_types]
    summed: dict[str, Any] = {key: sum(row[key] for row in counts) for key in COUNTS}
    summed["failure_rate_last_hour"] = ratio(
        summed["failed_last_hour"], summed["succeeded_last_hour"] + summed["failed_last_hour"]
    )
    summed["retry_rate_last_hour"] = ratio(
        summed["retried_last_hour"], summed["finished_last_hour"]
    )
    ages = [
        row["oldest_ready_seconds"] for row in task_types if row["oldest_ready_seconds"] is not None
    ]
    summed["oldest_ready_seconds"] = max(ages, default=None)
    summed["workers"] = {row["state"]: row["workers"] for row in worker_states}
    return summed


def ratio(part: int, whole: int) -> float | None:
    """``part / whole``, or None when there is nothing to divide (as the views' NULL)."""
    return part / whole if whole else None


OTHER_TASK_TYPES = "(other)"


def folded(task_types: list[TaskTypeMetrics], keep: int) -> list[Mapping[str, Any]]:
    """The ``keep`` busiest task types, and the rest summed as one ``(other)`` row.

    Busiest: the most tasks waiting, running or finished in the last hour. The
    summed row's counts, rates and oldest age are exact; its quantiles are
    absent (they cannot be summed).
    """
    if len(task_types) <= keep:
        return list(task_types)
    ranked = sorted(task_types, key=lambda row: (-_activity(row), row["task_type"]))
    rest = ranked[keep:]
    other: dict[str, Any] = dict.fromkeys(rest[0], None)
    other.update(totals(rest, ()))
    del other["workers"]
    other["task_type"] = OTHER_TASK_TYPES
    return [*ranked[:keep], other]


def _activity(row: TaskTypeMetrics) -> int:
    return row["blocked"] + row["pending"] + row["running"] + row["finished_last_hour"]
