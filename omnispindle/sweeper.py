"""The stale-lease sweeper: hands on the work of dead or hung workers.

It runs inside every worker process and, for deployments that want one
dedicated process, as ``omnispindle sweep``. Any number may run at once:
every statement takes its rows with SKIP LOCKED.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

import psycopg

from . import validation

log = logging.getLogger("omnispindle.sweeper")

MAX_ERROR_BACKOFF = 5.0
MAX_BATCH_SIZE = 100_000
# A lease counts as expired strictly after its expiry time.
EXPIRY_MARGIN = 0.01


def error_pause(errors: int) -> float:
    """Seconds to wait after ``errors`` database errors in a row: doubling, capped."""
    return min(MAX_ERROR_BACKOFF, 0.05 * 2 ** errors)


@dataclass(frozen=True)
class SweeperConfig:
    """How often and how much the sweeper does.

    Args:
        interval: seconds between passes.
        batch_size: most tasks (and workers) one pass handles.
        dead_worker_after: seconds without a heartbeat before a worker is
            declared dead.

    Raises:
        ValidationError: a value is not positive.
    """

    interval: float = 1.0
    batch_size: int = 500
    dead_worker_after: float = 60.0

    def __post_init__(self) -> None:
        validation.positive_number("interval", self.interval)
        validation.positive_number("dead_worker_after", self.dead_worker_after)
        validation.int_in_range("batch_size", self.batch_size, (1, MAX_BATCH_SIZE))


@dataclass(frozen=True)
class SweepCounts:
    """What one pass did; ``retry_in`` says when each requeued task is due (s).

    ``reconciled`` counts blocked tasks repaired after a race between their
    submission and their parents' completion.
    """

    requeued: int = 0
    failed: int = 0
    dead_workers: int = 0
    reconciled: int = 0
    retry_in: tuple[float, ...] = ()
    next_expiry_in: float | None = None

    @property
    def changed(self) -> int:
        """Tasks and workers this pass changed."""
        return self.requeued + self.failed + self.dead_workers + self.reconciled


class Sweeper:
    """Recovers expired leases, declares silent workers dead, repairs stranded blocked tasks.

    Example:
        >>> Sweeper(queue.db).run_once()  # doctest: +SKIP
        SweepCounts(requeued=3, failed=0, dead_workers=1)
    """

    def __init__(self, db, config: SweeperConfig | None = None) -> None:
        self.db = db
        self.config = config or SweeperConfig()

    def run_once(self) -> SweepCounts:
        """One bounded pass: at most ``batch_size`` leases and workers."""
        dead = self.db.fetch("mark_dead_workers", {
            "dead_after": self.config.dead_worker_after, "limit": self.config.batch_size})
        recovered = self.db.fetch("recover_expired_leases", {"limit": self.config.batch_size})
        delays = [row["retry_in"] for row in recovered if row["retry_in"] is not None]
        reconciled = self.db.fetch("reconcile_blocked", {"limit": self.config.batch_size})
        expiry = self.db.fetch("next_lease_expiry")[0]["seconds"]
        counts = SweepCounts(requeued=len(delays), failed=len(recovered) - len(delays),
                             dead_workers=len(dead), reconciled=len(reconciled),
                             retry_in=tuple(delays), next_expiry_in=expiry)
        if counts.changed:
            log.info("sweep: %d requeued, %d failed, %d workers dead, %d blocked tasks repaired",
                     counts.requeued, counts.failed, counts.dead_workers, counts.reconciled)
        return counts

    def pause_after(self, counts: SweepCounts) -> float:
        """Seconds until the next pass: the interval, or sooner when a lease lapses sooner."""
        if counts.next_expiry_in is None:
            return self.config.interval
        return min(self.config.interval, max(counts.next_expiry_in, 0.0) + EXPIRY_MARGIN)

    def run(self, stopping: threading.Event) -> None:
        """Sweep every ``interval`` seconds until ``stopping`` is set."""
        errors = 0
        while not stopping.is_set():
            try:
                pause = self.pause_after(self.run_once())
                errors = 0
            except psycopg.OperationalError as exc:
                errors += 1
                if errors == 1:
                    log.warning("sweeper lost the database (%s); retrying", exc)
                stopping.wait(error_pause(errors))
                continue
            stopping.wait(pause)
