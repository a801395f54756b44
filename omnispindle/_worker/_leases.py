"""Keeping a worker's leases: heartbeats, lost leases, cancel requests.

A heartbeat extends every lease the worker holds in one statement and says
which tasks have been asked to stop. What follows from its answer is decided
here, without I/O (see :func:`verdict`); the loop carries it out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from uuid import UUID

from omnispindle._db import queries as q
from omnispindle._db.query import Runner
from omnispindle._db.rows import HeldLease
from omnispindle._worker._claims import Claim, Claims


@dataclass(frozen=True)
class Verdict:
    """What a heartbeat's answer means for the held attempts.

    Args:
        lost: attempts whose lease another attempt (or a cancel) owns now; they
            are no longer held, and their calls are to be given up on.
        asked_to_stop: tasks newly asked to stop; their executors are told.
        ignoring_cancel: attempts told to stop a heartbeat ago that still run;
            they are to be abandoned as cancelled.
    """

    lost: list[Claim] = field(default_factory=list)
    asked_to_stop: list[int] = field(default_factory=list)
    ignoring_cancel: list[Claim] = field(default_factory=list)


def verdict(claims: Claims, held: Sequence[HeldLease], now: float, interval: float) -> Verdict:
    """Apply a heartbeat's answer ``held`` at ``now`` to ``claims``.

    Executors told to stop at least ``interval`` ago and still running are to
    be abandoned; an executor just told gets until the next heartbeat.
    """
    ignoring = claims.ignoring_cancel(since=now - interval)
    asked = claims.ask_to_stop([row["id"] for row in held if row["cancel_requested"]], now)
    lost = claims.lose(row["id"] for row in held)
    return Verdict(
        lost=lost, asked_to_stop=asked, ignoring_cancel=[c for c in ignoring if c not in lost]
    )


class LeaseKeeper:
    """Heartbeats for one worker, every ``interval`` seconds.

    Args:
        db: what runs the statements.
        claims: the attempts the worker holds.
        lease_seconds: how long each heartbeat extends a lease.
        interval: seconds between heartbeats.
    """

    def __init__(self, db: Runner, claims: Claims, lease_seconds: float, interval: float) -> None:
        self.db = db
        self.claims = claims
        self.lease_seconds = lease_seconds
        self.interval = interval

    def beat(self, worker_id: UUID, now: float, concurrency: int) -> Verdict:
        """Heartbeat now: mark the worker alive (running ``concurrency`` executors at
        once), extend its leases, see what they say."""
        ids, tokens = self.claims.leases()
        held = self.db.run(
            q.workers.heartbeat(
                worker_id=worker_id,
                lease_seconds=self.lease_seconds,
                ids=ids,
                tokens=tokens,
                concurrency=concurrency,
            )
        )
        return verdict(self.claims, held, now, self.interval)

    def cancel_requests(self) -> list[int]:
        """After a cancel notification: the held tasks asked to stop, newly told."""
        if not len(self.claims):
            return []
        ids, tokens = self.claims.leases()
        return self.db.run(q.tasks.cancel_requests(ids=ids, tokens=tokens))
