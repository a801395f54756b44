"""Retention: deleting finished tasks older than a horizon, in bounded batches.

A task's dependency edges and stream rows go with it. A finished task stays
while a dependent may still read its result (one that is blocked, pending or
running, or failed within the horizon and so may be retried by hand).
"""

from __future__ import annotations

from typing import Any

from . import validation
from .connections import run
from .errors import ValidationError

DEFAULT_RETENTION = 7 * 86400.0  # seconds: a week of history, then pruned
DEFAULT_BATCH_SIZE = 1000
MAX_BATCH_SIZE = 100_000
# Far longer horizons overflow Postgres intervals; no task is that old.
MAX_RETENTION = 100 * 365 * 86400.0


def horizon(name: str, value: Any, *, allow_none: bool = False) -> float | None:
    """Validate a retention horizon: seconds above zero, at most a century.

    Raises:
        ValidationError: not a finite number of seconds in that range.
    """
    seconds = validation.positive_number(name, value, allow_none=allow_none)
    if seconds is not None and seconds > MAX_RETENTION:
        raise ValidationError(f"{name} must be at most {MAX_RETENTION:.0f} seconds, got {value!r}")
    return seconds


def batch_size(name: str, value: Any) -> int:
    """Validate a prune batch size: an int from 1 to ``MAX_BATCH_SIZE``."""
    return validation.int_in_range(name, value, (1, MAX_BATCH_SIZE))


def prune_batch(db: Any, older_than: float, limit: int, *, wait: bool = False) -> int:
    """Delete at most ``limit`` prunable tasks, oldest first, in one short transaction.

    Only one batch runs at a time across all processes: with ``wait`` False
    (sweepers) a batch that finds another running deletes nothing.

    Returns:
        The number of tasks deleted.
    """
    keep = {"keep_seconds": older_than}
    with db.pool.connection() as conn, conn.transaction():
        if wait:
            run(conn, "lock_pruning")
        elif not run(conn, "try_lock_pruning")[0]["acquired"]:
            return 0
        ids = [row["id"] for row in run(conn, "lock_prunable_tasks", {**keep, "limit": limit})]
        if not ids:
            return 0
        return len(run(conn, "prune_finished", {**keep, "ids": ids}))


def prune(db: Any, older_than: float, batch: int = DEFAULT_BATCH_SIZE) -> int:
    """Delete every prunable task finished more than ``older_than`` seconds ago.

    Works in batches of ``batch`` tasks, each its own transaction, until a
    batch comes back short.

    Returns:
        The number of tasks deleted.

    Raises:
        ValidationError: ``older_than`` or ``batch`` is out of range; nothing is deleted.
    """
    older_than = horizon("older_than", older_than)
    batch = batch_size("batch_size", batch)
    total = 0
    while True:
        deleted = prune_batch(db, older_than, batch, wait=True)
        total += deleted
        if deleted < batch:
            return total


def count_prunable(db: Any, older_than: float) -> int:
    """How many tasks a prune with this horizon would delete now.

    Raises:
        ValidationError: ``older_than`` is out of range.
    """
    older_than = horizon("older_than", older_than)
    return db.fetch("count_prunable_tasks", {"keep_seconds": older_than})[0]["prunable"]
