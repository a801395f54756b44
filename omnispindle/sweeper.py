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
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise validation.ValidationError(f"batch_size must be a positive int, got {self.batch_size!r}")


@dataclass(frozen=True)
class SweepCounts:
    """What one pass did."""

    requeued: int = 0
    failed: int = 0
    dead_workers: int = 0


class Sweeper:
    """Recovers expired leases and declares silent workers dead.

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
        failed = sum(1 for row in recovered if row["state"] == "failed")
        counts = SweepCounts(len(recovered) - failed, failed, len(dead))
        if counts != SweepCounts():
            log.info("sweep: %s", counts)
        return counts

    def run(self, stopping: threading.Event) -> None:
        """Sweep every ``interval`` seconds until ``stopping`` is set."""
        errors = 0
        while not stopping.is_set():
            try:
                self.run_once()
                errors = 0
            except psycopg.OperationalError as exc:
                errors += 1
                if errors == 1:
                    log.warning("sweeper lost the database (%s); retrying", exc)
                stopping.wait(min(MAX_ERROR_BACKOFF, 0.05 * 2 ** errors))
                continue
            stopping.wait(self.config.interval)
