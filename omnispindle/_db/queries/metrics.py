"""Typed statements of a metrics snapshot (``sql/queries/metrics.sql``).

They run in one read-only transaction, after ``begin_metrics_snapshot``.
"""

from __future__ import annotations

from datetime import datetime

from omnispindle._db.query import Query, nothing, rows, value
from omnispindle._db.rows import TaskTypeMetrics, WorkerCount, WorkerMetrics
from omnispindle._db.statements import RUNTIME


def begin_metrics_snapshot() -> Query[None]:
    """Make the transaction a read-only snapshot (its first statement)."""
    return Query(RUNTIME["begin_metrics_snapshot"], None, nothing)


def task_type_metrics() -> Query[list[TaskTypeMetrics]]:
    """The figures of each task type."""
    return Query(RUNTIME["task_type_metrics"], None, rows)


def worker_metrics() -> Query[list[WorkerMetrics]]:
    """The figures of each registered worker."""
    return Query(RUNTIME["worker_metrics"], None, rows)


def worker_counts_by_state() -> Query[list[WorkerCount]]:
    """How many workers are in each state, every state listed."""
    return Query(RUNTIME["worker_counts_by_state"], None, rows)


def metrics_clock() -> Query[datetime]:
    """The snapshot's time, which ends every window."""
    return Query(RUNTIME["metrics_clock"], None, value("collected_at"))
