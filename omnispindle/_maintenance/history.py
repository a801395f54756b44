"""History: finished tasks moved out of the hot table into ``task_history``,
whose partitions retention drops whole (migration 0011).

With an archive horizon set, a sweeper's pass also makes sure partitions
exist, moves the tasks finished longer ago than the horizon, and drops the
partitions past the retention. ``tasks`` then holds only unfinished and lately
finished tasks, and keeps its size at any rate; the history is bounded by the
retention without a row deleted one by one. A task stays in ``tasks`` while a
dependent may still read its result, as it does from pruning, which still
deletes what is left there past the retention.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import Any

from omnispindle._core import defaults, validation
from omnispindle._db import queries as q
from omnispindle._db.query import Atomic, Plan, Query, Runner
from omnispindle._db.rows import PrunableTask
from omnispindle._maintenance import retention
from omnispindle.errors import LockTimeoutError, ValidationError

log = logging.getLogger("omnispindle.sweeper")

# A partition spans a tenth of the retention, so that the history holds at
# most a tenth more than it; within these bounds (seconds).
MIN_WIDTH = 60.0
MAX_WIDTH = 86400.0
# While batches come back full, a pass moves more for this long: a fleet
# finishing thousands of tasks a second needs more than a batch a pass.
PASS_BUDGET_S = 0.5


def archive_horizon(name: str, value: Any, keep: float | None) -> float | None:
    """None (tasks stay in ``tasks`` until pruned), or seconds above zero and
    below the retention ``keep``: a task moved later would already be past it.

    Raises:
        ValidationError: not a finite number of seconds in range.
    """
    if value is None:
        return None
    seconds = validation.positive_number(name, value)
    limit = defaults.MAX_RETENTION if keep is None else keep
    if seconds >= limit:
        raise ValidationError(f"{name} must be shorter than the retention ({limit:g} s)")
    return seconds


def partition_width(keep: float | None) -> float:
    """Seconds a new partition spans under retention ``keep`` (None: kept for ever)."""
    if keep is None:
        return MAX_WIDTH
    return min(MAX_WIDTH, max(MIN_WIDTH, keep / 10))


class Archiver:
    """One sweeper's archiving, pass by pass.

    Args:
        db: where the tasks are.
        after: seconds a task stays in ``tasks`` once finished.
        keep: seconds the history keeps a task (None: for ever).
        batch: most tasks one pass moves.
    """

    def __init__(self, db: Runner, after: float, keep: float | None, batch: int) -> None:
        self.db, self.after, self.keep, self.batch = db, after, keep, batch
        self.width = partition_width(keep)
        self.cursor = retention.PruneCursor()
        # The oldest finish among the tasks a batch locked but did not move:
        # the next pass makes a partition for it if none reaches back that far.
        self.uncovered: datetime | None = None

    def run_once(self) -> tuple[int, int]:
        """One pass: partitions made, batches moved, old partitions dropped.

        Returns:
            The tasks moved and the partitions dropped.
        """
        self._cover()
        moved = self._move()
        if self.uncovered is not None and self._cover():  # tasks older than every partition
            moved += self._move()
        dropped = 0
        if self.keep is not None:
            dropped = self._keep_partitions(q.history.drop_history(self.keep))
        return moved, dropped

    def _cover(self) -> int:
        """Make the partitions due; a batch after new ones starts at the oldest
        task again (tasks passed over for want of a partition may go now)."""
        made = self._keep_partitions(q.history.cover_history(self.uncovered, self.width, self.keep))
        if made:
            self.cursor.restart()
        return made

    def _move(self) -> int:
        """Move batches while they come back full, for ``PASS_BUDGET_S`` at most."""
        moved = last = self.move_batch()
        began = time.monotonic()
        while last == self.batch and time.monotonic() - began < PASS_BUDGET_S:
            last = self.move_batch()
            moved += last
        return moved

    def move_batch(self) -> int:
        """Move at most ``batch`` tasks, oldest first from the cursor; how many moved."""
        start = self.cursor.start()
        began = time.monotonic()
        window = defaults.MAX_RETENTION if self.keep is None else self.keep
        locked, moved = self.db.run(Atomic(_batch(self.after, window, self.batch, start)))
        self.cursor.move(locked, time.monotonic() - began)
        gone = set(moved)
        left = [row["finished_at"] for row in locked if row["id"] not in gone]
        self.uncovered = min(left) if left else None
        return len(moved)

    def _keep_partitions(self, query: Query[int]) -> int:
        """Run a statement that creates or drops partitions. Either waits for
        readers of the history, for a bounded time: one that runs out tries
        again on the next pass."""
        try:
            return self.db.run(query)
        except LockTimeoutError:
            log.info("sweep: the history's partitions were busy; next pass")
            return 0


def _batch(
    after: float, window: float, limit: int, start: datetime | None
) -> Plan[tuple[list[PrunableTask], list[int]]]:
    """One archive batch's statements: the pruner's lock, the tasks locked, those
    moved (a failed dependent keeps its parents for ``window`` seconds)."""
    if not (yield q.retention.try_lock_pruning()):
        return [], []
    locked: list[PrunableTask] = yield q.retention.lock_prunable_tasks(
        keep_seconds=after, limit=limit, after=start
    )
    if not locked:
        return locked, []
    moved: list[int] = yield q.history.archive_finished(
        retry_window_seconds=window, ids=[row["id"] for row in locked]
    )
    return locked, moved
