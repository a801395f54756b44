"""Queue metrics: one consistent snapshot of the ``task_metrics`` and ``worker_metrics`` views."""

from __future__ import annotations

from typing import Any, Iterable

from omnispindle._db.pool import Database, run

# Per-type counts that add up over task types.
COUNTS = (
    "blocked", "pending", "running", "succeeded", "failed", "cancelled",
    "finished_last_minute", "succeeded_last_minute", "failed_last_minute",
    "cancelled_last_minute", "finished_last_hour", "succeeded_last_hour",
    "failed_last_hour", "cancelled_last_hour", "retried_last_hour",
)


def snapshot(db: Database) -> dict[str, Any]:
    """Read every metric in one read-only transaction, so that all figures agree.

    Returns:
        ``task_types``, ``workers``, ``totals`` and ``collected_at``, as
        documented on :meth:`omnispindle.TaskQueue.get_metrics`.
    """
    with db.pool.connection() as conn, conn.transaction():
        run(conn, "begin_metrics_snapshot")
        task_types = run(conn, "task_type_metrics")
        workers = run(conn, "worker_metrics")
        worker_states = run(conn, "worker_counts_by_state")
        collected_at = run(conn, "metrics_clock")[0]["collected_at"]
    return {
        "task_types": task_types,
        "workers": workers,
        "totals": totals(task_types, worker_states),
        "collected_at": collected_at,
    }


def totals(task_types: list[dict[str, Any]],
           worker_states: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Figures over all task types, and the number of workers in each state."""
    summed: dict[str, Any] = {key: sum(row[key] for row in task_types) for key in COUNTS}
    summed["failure_rate_last_hour"] = ratio(
        summed["failed_last_hour"], summed["succeeded_last_hour"] + summed["failed_last_hour"])
    summed["retry_rate_last_hour"] = ratio(summed["retried_last_hour"],
                                           summed["finished_last_hour"])
    ages = [row["oldest_ready_seconds"] for row in task_types
            if row["oldest_ready_seconds"] is not None]
    summed["oldest_ready_seconds"] = max(ages, default=None)
    summed["workers"] = {row["state"]: row["workers"] for row in worker_states}
    return summed


def ratio(part: int, whole: int) -> float | None:
    """``part / whole``, or None when there is nothing to divide (as the views' NULL)."""
    return part / whole if whole else None
