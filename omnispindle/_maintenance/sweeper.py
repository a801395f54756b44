"""The stale-lease sweeper: hands on the work of dead or hung workers, prunes old tasks,
counts finished tasks for the dashboard (see ``rollup``).

It runs inside every worker process and, for deployments that want one
dedicated process, as ``omnispindle sweep``. Any number may run at once:
every statement takes its rows with SKIP LOCKED.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass

import psycopg

from omnispindle._core import defaults, validation
from omnispindle._core.rewalks import Rewalks
from omnispindle._db import queries as q
from omnispindle._db.query import Runner
from omnispindle._db.rows import FailedAttempt
from omnispindle._maintenance import election, history, retention, rollup
from omnispindle.errors import (
    DatabaseUnavailableError,
    LockTimeoutError,
    PermissionDeniedError,
    first_line,
)

log = logging.getLogger("omnispindle.sweeper")

MAX_ERROR_BACKOFF = 5.0
# A lease counts as expired strictly after its expiry time.
EXPIRY_MARGIN = 0.01
# After a full prune batch the next pass comes this soon: a backlog of old
# tasks is worked down in short transactions, not in one long one.
PRUNE_BACKLOG_PAUSE = 0.1


def error_pause(errors: int, started: float) -> float:
    """Seconds to wait after ``errors`` database errors in a row, the last from an
    attempt begun at ``started`` (monotonic): doubling and capped, but counted from
    the attempt's start. An attempt that already waited that long (for a pooled
    connection during an outage) is followed at once, so the pause never adds to
    the pool's own wait and a process is back soon after the database."""
    return max(0.0, min(MAX_ERROR_BACKOFF, 0.05 * 2.0**errors) - (time.monotonic() - started))


@dataclass(frozen=True)
class SweeperConfig:
    """How often and how much the sweeper does.

    Args:
        interval: seconds between passes.
        batch_size: most tasks (and workers) one pass handles.
        dead_worker_after: seconds without a heartbeat before a worker is
            declared dead.
        retention: seconds finished tasks are kept before a pass prunes
            them; None keeps them forever.
        prune_batch_size: most tasks one pass prunes (or archives).
        archive_after: seconds a finished task stays in ``tasks`` before a
            pass moves it to the history (``history``), whose partitions the
            retention then drops (what is left in ``tasks`` past the retention,
            kept for a dependent until then, is pruned); shorter than the
            retention. None (the default): finished tasks stay in ``tasks``.

    Raises:
        ValidationError: a value is not positive.
    """

    interval: float = defaults.SWEEP_INTERVAL
    batch_size: int = defaults.SWEEP_BATCH_SIZE
    dead_worker_after: float = defaults.DEAD_WORKER_AFTER
    retention: float | None = None
    prune_batch_size: int = defaults.PRUNE_BATCH_SIZE
    archive_after: float | None = None

    def __post_init__(self) -> None:
        validation.seconds("interval", self.interval)
        validation.seconds("dead_worker_after", self.dead_worker_after)
        validation.int_in_range("batch_size", self.batch_size, (1, defaults.MAX_BATCH_SIZE))
        retention.optional_horizon("retention", self.retention)
        retention.batch_size("prune_batch_size", self.prune_batch_size)
        history.archive_horizon("archive_after", self.archive_after, self.retention)


@dataclass(frozen=True)
class SweepCounts:
    """What one pass did; ``retry_in`` says when each requeued task is due (s).

    ``reconciled`` counts blocked tasks repaired after a race between their
    submission and their parents' completion; ``pruned`` the finished tasks
    deleted for being older than the retention; ``archived`` those moved to the
    history, ``dropped`` its partitions past the retention; ``counted`` the
    finished tasks added to the outcome rollup.
    """

    requeued: int = 0
    failed: int = 0
    dead_workers: int = 0
    reconciled: int = 0
    pruned: int = 0
    archived: int = 0
    dropped: int = 0
    counted: int = 0
    retry_in: tuple[float, ...] = ()
    next_expiry_in: float | None = None

    @property
    def changed(self) -> int:
        """Tasks and workers this pass changed."""
        return self.requeued + self.failed + self.dead_workers + self.reconciled


class Sweeper:
    """Recovers expired leases, declares silent workers dead, repairs stranded blocked tasks,
    prunes finished tasks past the retention.

    Example:
        >>> Sweeper(queue.db).run_once()  # doctest: +SKIP
        SweepCounts(requeued=3, failed=0, dead_workers=1)
    """

    def __init__(self, db: Runner, config: SweeperConfig | None = None) -> None:
        self.db = db
        self.config = config or SweeperConfig()
        self.prune_cursor = retention.PruneCursor()
        self.archiver = (
            None
            if self.config.archive_after is None
            else history.Archiver(
                db,
                self.config.archive_after,
                self.config.retention,
                self.config.prune_batch_size,
            )
        )
        # The lease statements walk every running-index entry: no cursor fits
        # them (heartbeats move expiry times), so they come less often once slow.
        self.lease_scans = Rewalks(min_interval=0.0)
        self.rolling_up = True

    def run_once(self, *, paced: bool = False) -> SweepCounts:
        """One bounded pass: at most ``batch_size`` leases and workers, and
        ``prune_batch_size`` finished tasks pruned when a retention is set.

        Args:
            paced: skip the lease statements while they are not due (see
                ``_recover_leases``), as the sweeping loops do.
        """
        dead = self.db.run(
            q.workers.mark_dead_workers(
                dead_after=self.config.dead_worker_after, limit=self.config.batch_size
            )
        )
        self.db.run(
            q.workers.forget_stopped_workers(
                keep_seconds=defaults.STOPPED_WORKER_KEPT, limit=self.config.batch_size
            )
        )
        recovered, expiry = self._recover_leases(paced)
        delays = [row["retry_in"] for row in recovered if row["retry_in"] is not None]
        reconciled = self.db.run(q.tasks.reconcile_blocked(self.config.batch_size))
        self.db.run(q.tasks.forget_submissions(self.config.batch_size))
        pruned, counted = self._prune(), self._roll_up()
        archived, dropped = self.archiver.run_once() if self.archiver else (0, 0)
        counts = SweepCounts(
            requeued=len(delays),
            failed=len(recovered) - len(delays),
            dead_workers=len(dead),
            reconciled=len(reconciled),
            pruned=pruned,
            archived=archived,
            dropped=dropped,
            counted=counted,
            retry_in=tuple(delays),
            next_expiry_in=expiry,
        )
        if counts.changed:
            log.info(
                "sweep: %d requeued, %d failed, %d workers dead, %d blocked tasks repaired",
                counts.requeued,
                counts.failed,
                counts.dead_workers,
                counts.reconciled,
            )
        if counts.pruned:
            log.info("sweep: %d finished tasks pruned", counts.pruned)
        if counts.dropped:
            log.info("sweep: %d partitions of the history dropped", counts.dropped)
        return counts

    def _recover_leases(self, paced: bool) -> tuple[list[FailedAttempt], float | None]:
        """Expired leases handed on, and seconds until the next one lapses;
        nothing when ``paced`` and the lease scans are not due.

        The running index keeps an entry for every attempt an old snapshot
        still sees, so under a long-held snapshot these statements slow down
        as it ages. Paced, they then take about 1/50 of the time at most (see
        ``rewalks``), and a dead worker's tasks wait that much longer.
        """
        if paced and not self.lease_scans.due():
            return [], None
        started = time.monotonic()
        recovered = self.db.run(q.tasks.recover_expired_leases(self.config.batch_size))
        expiry = self.db.run(q.tasks.next_lease_expiry())
        self.lease_scans.walked(time.monotonic() - started)
        return recovered, expiry

    def _prune(self) -> int:
        if self.config.retention is None:
            return 0
        return retention.prune_batch(
            self.db, self.config.retention, self.config.prune_batch_size, cursor=self.prune_cursor
        )

    def _roll_up(self) -> int:
        """One rollup pass. A role granted its access before the rollup existed
        may not fill it: the dashboard then counts every finished task live
        (slower, as exact), and this sweeper stops trying."""
        if not self.rolling_up:
            return 0
        try:
            return rollup.roll_up(self.db) or 0
        except PermissionDeniedError:
            log.warning(
                "sweeper: this role may not fill the outcome rollup; "
                "run `omnispindle grant` for it again"
            )
            self.rolling_up = False
            return 0

    def pause_after(self, counts: SweepCounts) -> float:
        """Seconds until the next pass: the interval, or sooner when a lease lapses
        sooner or a full prune (or archive) batch says more old tasks wait."""
        pause = self.config.interval
        if counts.next_expiry_in is not None:
            pause = min(pause, max(counts.next_expiry_in, 0.0) + EXPIRY_MARGIN)
        if max(counts.pruned, counts.archived) >= self.config.prune_batch_size:
            pause = min(pause, PRUNE_BACKLOG_PAUSE)
        return pause

    def run(self, stopping: threading.Event) -> None:
        """Sweep every ``interval`` seconds until ``stopping`` is set, while this
        process holds the sweep's lease (see ``election``)."""
        lease = election.DutyLease(
            self.db, election.SWEEP, election.lease_seconds(self.config.interval)
        )
        try:
            self._run(stopping, lease)
        finally:
            with contextlib.suppress(psycopg.Error, LockTimeoutError, DatabaseUnavailableError):
                lease.give_up()

    def _run(self, stopping: threading.Event, lease: election.DutyLease) -> None:
        errors = 0
        while not stopping.is_set():
            started = time.monotonic()
            try:
                pause = self.config.interval
                if lease.hold():
                    pause = self.pause_after(self.run_once(paced=True))
                errors = 0
            except (psycopg.OperationalError, LockTimeoutError, DatabaseUnavailableError) as exc:
                errors += 1
                if errors == 1 and not isinstance(exc, DatabaseUnavailableError):
                    log.warning("sweeper: database error (%s); retrying", first_line(exc))
                stopping.wait(error_pause(errors, started))
                continue
            stopping.wait(pause)
