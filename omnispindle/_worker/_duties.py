"""The maintenance a worker takes on: sweeping stale leases and enqueuing periodic ticks.

Each runs when due, between the worker's claims, in the one process of the
fleet that holds its lease (see ``election``); none is needed for the
worker's own work, so either may be left to other processes. A duty whose
statements the role may not run is handed on and tried again after a while,
rather than ending the worker.
"""

from __future__ import annotations

import logging
import time

from omnispindle._db.query import Runner
from omnispindle._maintenance import election
from omnispindle._maintenance.periodic import PeriodicScheduler
from omnispindle._maintenance.sweeper import Sweeper, SweeperConfig
from omnispindle._worker._timers import NEVER, Timers
from omnispindle.errors import PermissionDeniedError, first_line

log = logging.getLogger("omnispindle.maintenance")

# Seconds before a duty the role was refused is tried again: once granted, it resumes.
REFUSED_PAUSE = 60.0


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
        self.refused: set[str] = set()  # the duties refused since their last pass

    def run_due(self) -> None:
        """Sweep and look at the schedules, each if due and this process holds it."""
        now = time.monotonic()
        if self.sweeper is not None and now >= self.timers.sweep_at:
            self.timers.sweep_at = now + self.sweeper.config.interval
            try:
                self._sweep(self.sweeper, now)
            except PermissionDeniedError as exc:
                self.timers.sweep_at = now + self._refused(self.sweep_lease, "sweep", exc)
        if self.scheduler is not None and now >= self.timers.schedule_at:
            self.timers.schedule_at = now + self.schedule_interval
            try:
                self._schedule(self.scheduler, now)
            except PermissionDeniedError as exc:
                self.timers.schedule_at = now + self._refused(
                    self.schedule_lease, "look at the schedules", exc
                )

    def _sweep(self, sweeper: Sweeper, now: float) -> None:
        if self.sweep_lease.hold():
            counts = sweeper.run_once(paced=True)
            self.refused.discard(election.SWEEP)
            self.timers.due_in(counts.retry_in, now)
            self.timers.sweep_at = now + sweeper.pause_after(counts)

    def _schedule(self, scheduler: PeriodicScheduler, now: float) -> None:
        if self.schedule_lease.hold():
            tick_in = scheduler.run_once().next_tick_in
            self.refused.discard(election.SCHEDULE)
            # Look again at the next tick (a hair after it), or sooner for new schedules.
            self.timers.schedule_at = now + min(
                self.schedule_interval, NEVER if tick_in is None else tick_in + 0.001
            )

    def _refused(self, lease: election.DutyLease, what: str, exc: PermissionDeniedError) -> float:
        """Hand a duty the role may not carry out on to a process whose role may, say
        so once, and return the pause before it is tried again."""
        lease.give_up()
        if lease.duty not in self.refused:
            self.refused.add(lease.duty)
            log.warning(
                "this role may not %s (%s); leaving it to other processes: "
                "run `omnispindle grant` for it again",
                what,
                first_line(exc),
            )
        return REFUSED_PAUSE

    def give_up(self) -> None:
        """Hand the duties this process holds on to the others at once."""
        self.sweep_lease.give_up()
        self.schedule_lease.give_up()
