"""Periodic tasks: schedules stored in the database, ticks enqueued by every worker.

Any number of workers run :class:`PeriodicScheduler`; each computes the same
ticks from the same cron expression and the database's clock, and the
primary key of ``omnispindle.periodic_ticks`` lets exactly one of them
enqueue each tick. Ticks missed for up to a minute (a slow pass, a brief
outage) are enqueued late; after a longer gap only the latest one is.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from omnispindle._core.cron import CronExpression
from omnispindle._db import queries as q
from omnispindle._db.query import Runner
from omnispindle.errors import CronExpressionError

PRUNE_INTERVAL = 600.0
CATCH_UP = 60.0  # seconds of missed ticks that are still enqueued
MAX_CATCH_UP_TICKS = 60


def due_ticks(
    cron: CronExpression, now: datetime, saved_at: datetime, last_tick: datetime | None
) -> list[datetime]:
    """The ticks to enqueue now, newest first.

    Every tick since the last one enqueued, within the last CATCH_UP seconds
    (a slow pass or a brief outage loses none); after a longer gap only the
    latest. Never a tick from before the schedule was saved.
    """
    ticks: list[datetime] = []
    tick = cron.last_at_or_before(now)
    while (
        tick is not None
        and tick >= saved_at
        and (last_tick is None or tick > last_tick)
        and len(ticks) < MAX_CATCH_UP_TICKS
        and (not ticks or tick > now - timedelta(seconds=CATCH_UP))
    ):
        ticks.append(tick)
        tick = cron.last_at_or_before(tick - timedelta(seconds=1))
    return ticks


@dataclass(frozen=True)
class SchedulePass:
    """What one scheduler pass did, and when the next tick of any schedule is due."""

    enqueued: int
    next_tick_in: float | None  # seconds; None without schedules


class PeriodicScheduler:
    """Enqueues the due ticks of every enabled schedule, once each across all workers."""

    def __init__(self, db: Runner) -> None:
        self.db = db
        self._parsed: dict[tuple[str, str], CronExpression | None] = {}
        # Each schedule that had no tick due at the last pass, with what its
        # ticks depend on then and its next tick: while those stay the same, it
        # has none due before that tick. Working out every schedule's ticks at
        # every pass (once a second) took the pass 1 s at 10,000 schedules.
        self._quiet: dict[str, tuple[tuple[object, ...], datetime]] = {}
        self._next_prune = 0.0

    def run_once(self) -> SchedulePass:
        """Enqueue each schedule's latest due tick (if no one has yet)."""
        names, ticks, waits = [], [], []
        rows = self.db.run(q.periodic.enabled_schedules())
        # Only the expressions of the schedules saved now are kept: those of
        # schedules replaced or removed since would pile up in a worker that
        # runs for months.
        self._parsed = {
            (row["cron"], row["timezone"]): self._expression(row["cron"], row["timezone"])
            for row in rows
        }
        quiet = {}
        for row in rows:
            cron = self._parsed[row["cron"], row["timezone"]]
            if cron is None:
                continue
            state = (row["cron"], row["timezone"], row["updated_at"], row["last_tick_at"])
            known = self._quiet.get(row["name"])
            if known is not None and known[0] == state and row["now"] < known[1]:
                quiet[row["name"]] = known
                waits.append((known[1] - row["now"]).total_seconds())
                continue
            due = due_ticks(cron, row["now"], row["updated_at"], row["last_tick_at"])
            for tick in due:
                names.append(row["name"])
                ticks.append(tick)
            next_tick = cron.next_after(row["now"])
            if not due:
                quiet[row["name"]] = (state, next_tick)
            waits.append((next_tick - row["now"]).total_seconds())
        self._quiet = quiet
        enqueued = self.db.run(q.periodic.enqueue_periodic_ticks(names, ticks)) if names else []
        self._prune_if_due()
        return SchedulePass(len(enqueued), min(waits) if waits else None)

    def _expression(self, text: str, zone: str) -> CronExpression | None:
        """Parsed once per text and zone; one edited into nonsense by hand is skipped."""
        if (text, zone) not in self._parsed:
            try:
                self._parsed[text, zone] = CronExpression.parse(text, zone)
            except CronExpressionError:
                self._parsed[text, zone] = None
        return self._parsed[text, zone]

    def _prune_if_due(self) -> None:
        now = time.monotonic()
        if now >= self._next_prune:
            self.db.run(q.periodic.prune_periodic_ticks())
            self._next_prune = now + PRUNE_INTERVAL
