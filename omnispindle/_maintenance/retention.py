"""Retention: deleting finished tasks older than a horizon, in bounded batches.

A task's dependency edges and stream rows go with it. A finished task stays
while a dependent may still read its result (one that is blocked, pending or
running, or failed within the horizon and so may be retried by hand).
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from omnispindle._core import validation
from omnispindle._db.pool import run
from omnispindle.errors import ValidationError
from omnispindle._core.rewalks import FACTOR, Rewalks

DEFAULT_RETENTION = 7 * 86400.0  # seconds: a week of history, then pruned
DEFAULT_BATCH_SIZE = 1000
MAX_BATCH_SIZE = 100_000
# Far longer horizons overflow Postgres intervals; no task is that old.
MAX_RETENTION = 100 * 365 * 86400.0
# Prune cursor (see PruneCursor): how often batches start at the oldest task at most.
FROM_OLDEST_MIN_S = 1.0


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


class PruneCursor:
    """Where the next prune batch starts in ``tasks_finished_idx``.

    Deleted tasks keep their index entries until vacuum removes them, and
    vacuum cannot while any session holds an older snapshot: a batch that
    starts at the oldest entry steps over every one of them, and slows as the
    snapshot ages. So a batch starts where the last one ended, and only now
    and then at the oldest (see ``rewalks``), for tasks left behind (kept for a
    dependent, or held by another transaction).
    """

    def __init__(self, min_interval: float = FROM_OLDEST_MIN_S, factor: float = FACTOR) -> None:
        self.oldest_walks = Rewalks(min_interval, factor)
        self.after: datetime | None = None
        self._from_oldest = True

    def start(self) -> datetime | None:
        """The finished_at the next batch starts at; None for the oldest."""
        self._from_oldest = self.after is None or self.oldest_walks.due()
        return None if self._from_oldest else self.after

    def move(self, locked: list[dict[str, Any]], seconds: float) -> None:
        """Follow a batch, started at ``start()``, that locked ``locked`` in ``seconds``."""
        if self._from_oldest:
            self.oldest_walks.walked(seconds)
        if locked:
            self.after = max(row["finished_at"] for row in locked)


def prune_batch(db: Any, older_than: float, limit: int, *, wait: bool = False,
                cursor: PruneCursor | None = None) -> int:
    """Delete at most ``limit`` prunable tasks, oldest first (past ``cursor`` if
    given), in one short transaction.

    Only one batch runs at a time across all processes: with ``wait`` False
    (sweepers) a batch that finds another running deletes nothing.

    Returns:
        The number of tasks deleted.
    """
    keep = {"keep_seconds": older_than}
    after = cursor.start() if cursor is not None else None
    started = time.monotonic()
    with db.pool.connection() as conn, conn.transaction():
        if wait:
            run(conn, "lock_pruning")
        elif not run(conn, "try_lock_pruning")[0]["acquired"]:
            return 0
        locked = run(conn, "lock_prunable_tasks", {**keep, "limit": limit, "after": after})
        ids = [row["id"] for row in locked]
        deleted = len(run(conn, "prune_finished", {**keep, "ids": ids})) if ids else 0
    if cursor is not None:
        cursor.move(locked, time.monotonic() - started)
    return deleted


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
    cursor = PruneCursor(min_interval=float("inf"))  # each batch goes on from the last
    while True:
        deleted = prune_batch(db, older_than, batch, wait=True, cursor=cursor)
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
