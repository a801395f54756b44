"""Retention: deleting finished tasks older than a horizon, in bounded batches.

A task's dependency edges and stream rows go with it. A finished task stays
while a dependent may still read its result (one that is blocked, pending or
running, failed within the horizon and so may be retried by hand, or cancelled
within it by another dependency's failure, while a retry of that one with its
dependents may bring it back).
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from omnispindle._core import defaults, validation
from omnispindle._core.rewalks import FACTOR, Rewalks
from omnispindle._db import queries as q
from omnispindle._db.query import Atomic, Plan, Runner
from omnispindle._db.rows import PrunableTask
from omnispindle.errors import ValidationError

DEFAULT_RETENTION = defaults.RETENTION
DEFAULT_BATCH_SIZE = defaults.PRUNE_BATCH_SIZE
MAX_BATCH_SIZE = defaults.MAX_BATCH_SIZE
MAX_RETENTION = defaults.MAX_RETENTION
# Prune cursor (see PruneCursor): how often batches start at the oldest task at most.
FROM_OLDEST_MIN_S = 1.0


def horizon(name: str, value: Any) -> float:
    """Validate a retention horizon: seconds above zero, at most a century.

    Raises:
        ValidationError: not a finite number of seconds in that range.
    """
    seconds = validation.positive_number(name, value)
    if seconds > MAX_RETENTION:
        raise ValidationError(f"{name} must be at most {MAX_RETENTION:.0f} seconds, got {value!r}")
    return seconds


def optional_horizon(name: str, value: Any) -> float | None:
    """None (keep for ever), or a retention horizon."""
    return None if value is None else horizon(name, value)


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

    def restart(self) -> None:
        """Start the next batch at the oldest task."""
        self.after = None

    def move(self, locked: list[PrunableTask], seconds: float) -> None:
        """Follow a batch, started at ``start()``, that locked ``locked`` in ``seconds``."""
        if self._from_oldest:
            self.oldest_walks.walked(seconds)
        if locked:
            self.after = max(row["finished_at"] for row in locked)


def prune_batch(
    db: Runner,
    older_than: float,
    limit: int,
    *,
    wait: bool = False,
    cursor: PruneCursor | None = None,
) -> int:
    """Delete at most ``limit`` prunable tasks, oldest first (past ``cursor`` if
    given), in one short transaction.

    Only one batch runs at a time across all processes: with ``wait`` False
    (sweepers) a batch that finds another running deletes nothing.

    Returns:
        The number of tasks deleted.
    """
    after = cursor.start() if cursor is not None else None
    started = time.monotonic()
    locked, deleted = db.run(Atomic(_batch(older_than, limit, after, wait)))
    if cursor is not None:
        cursor.move(locked, time.monotonic() - started)
    return deleted


def _batch(
    older_than: float, limit: int, after: datetime | None, wait: bool
) -> Plan[tuple[list[PrunableTask], int]]:
    """One prune batch's statements: the lock, the tasks locked, those deleted."""
    if wait:
        yield q.retention.lock_pruning()
    elif not (yield q.retention.try_lock_pruning()):
        return [], 0
    locked: list[PrunableTask] = yield q.retention.lock_prunable_tasks(
        keep_seconds=older_than, limit=limit, after=after
    )
    ids = [row["id"] for row in locked]
    if not ids:
        return locked, 0
    deleted: list[int] = yield q.retention.prune_finished(keep_seconds=older_than, ids=ids)
    return locked, len(deleted)


def prune(db: Runner, older_than: float, batch: int = DEFAULT_BATCH_SIZE) -> int:
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


def count_prunable(db: Runner, older_than: float) -> int:
    """How many tasks a prune with this horizon would delete now.

    Raises:
        ValidationError: ``older_than`` is out of range.
    """
    older_than = horizon("older_than", older_than)
    return db.run(q.retention.count_prunable_tasks(older_than))
