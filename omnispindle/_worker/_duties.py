"""The maintenance a worker takes on: sweeping stale leases and enqueuing periodic ticks.

Each runs when due, between the worker's claims; none is needed for the
worker's own work, so either may be left to other processes.
"""

from __future__ import annotations

import time

from omnispindle._db.query import Runner
from omnispindle._maintenance.periodic import PeriodicScheduler
from omnispindle._maintenance.sweeper import Sweeper, SweeperConfig
from omnispindle._worker._timers import NEVER, Timers


class Duties:
    """The sweeper and the periodic scheduler, as one worker runs them.

    Args:
        db: what runs the statements.
        timers: the worker's timers, whose ``sweep_at`` and ``schedule_at`` these keep.
        sweeper: the sweeper's settings, or None to leave sweeping to others.
        schedule_interval: longest pause between looks at the schedules, or
            None to leave periodic ticks to others.
    """

    def __init__(
        self,
        db: Runner,
        timers: Timers,
        sweeper: SweeperConfig | None,
        schedule_interval: float | None,
    ) -> None:
        self.timers = timers
        self.sweeper = Sweeper(db, sweeper) if sweeper is not None else None
        self.scheduler = PeriodicScheduler(db) if schedule_interval is not None else None
        self.schedule_interval = schedule_interval or NEVER
        timers.sweep_at = 0.0 if self.sweeper else NEVER
        timers.schedule_at = 0.0 if self.scheduler else NEVER

    def run_due(self) -> None:
        """Sweep and look at the schedules, each if due."""
        now = time.monotonic()
        if self.sweeper is not None and now >= self.timers.sweep_at:
            counts = self.sweeper.run_once(paced=True)
            self.timers.due_in(counts.retry_in, now)
            self.timers.sweep_at = now + self.sweeper.pause_after(counts)
        if self.scheduler is not None and now >= self.timers.schedule_at:
            tick_in = self.scheduler.run_once().next_tick_in
            # Look again at the next tick (a hair after it), or sooner for new schedules.
            self.timers.schedule_at = now + min(
                self.schedule_interval, NEVER if tick_in is None else tick_in + 0.001
            )
