"""The maintenance a worker takes on: sweeping stale leases and enqueuing periodic ticks.

Each runs when due, between the worker's claims, in the one process of the
fleet that holds its lease (see ``election``); none is needed for the
worker's own work, so either may be left to other processes.
"""

from __future__ import annotations

import time

from omnispindle._db.query import Runner
from omnispindle._maintenance import election
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
        self.sweep_lease = election.DutyLease(
            db, election.SWEEP, election.lease_seconds(sweeper.interval if sweeper else 0.0)
        )
        self.schedule_lease = election.DutyLease(
            db, election.SCHEDULE, election.lease_seconds(schedule_interval or 0.0)
        )
        timers.sweep_at = 0.0 if self.sweeper else NEVER
        timers.schedule_at = 0.0 if self.scheduler else NEVER

    def run_due(self) -> None:
        """Sweep and look at the schedules, each if due and this process holds it."""
        now = time.monotonic()
        if self.sweeper is not None and now >= self.timers.sweep_at:
            self.timers.sweep_at = now + self.sweeper.config.interval
            if self.sweep_lease.hold():
                counts = self.sweeper.run_once(paced=True)
                self.timers.due_in(counts.retry_in, now)
                self.timers.sweep_at = now + self.sweeper.pause_after(counts)
        if self.scheduler is not None and now >= self.timers.schedule_at:
            self.timers.schedule_at = now + self.schedule_interval
            if self.schedule_lease.hold():
                tick_in = self.scheduler.run_once().next_tick_in
                # Look again at the next tick (a hair after it), or sooner for new schedules.
                self.timers.schedule_at = now + min(
                    self.schedule_interval, NEVER if tick_in is None else tick_in + 0.001
                )

    def give_up(self) -> None:
        """Hand the duties this process holds on to the others at once."""
        self.sweep_lease.give_up()
        self.schedule_lease.give_up()
