"""One runner at a time for each maintenance duty, elected by a lease row.

Every worker process can sweep and enqueue periodic ticks. In a fleet one of
them at a time does each, so that a hundred idle processes cost the database
what one does: the process holding a duty's lease (``maintenance_leases``)
renews it at each pass, the others ask once an interval (a read of one row)
and take the duty when the lease lapses, because its holder was killed, or is
given up, because its holder stopped.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid

from omnispindle._db import queries as q
from omnispindle._db.query import Runner
from omnispindle.errors import PermissionDeniedError

log = logging.getLogger("omnispindle.maintenance")

SWEEP = "sweep"
SCHEDULE = "schedule"
# A lease lasts this many of the duty's intervals, and at least MIN_LEASE
# seconds: a holder that misses a pass or two (a slow prune, a pause of its
# process) keeps the duty, one killed hands it on within the lease.
LEASE_INTERVALS = 5.0
MIN_LEASE = 2.0


def lease_seconds(interval: float) -> float:
    """How long a lease on a duty run every ``interval`` seconds lasts."""
    return max(MIN_LEASE, LEASE_INTERVALS * interval)


class DutyLease:
    """This process's claim on one maintenance duty.

    Args:
        db: what runs the statements.
        duty: ``SWEEP`` or ``SCHEDULE``.
        seconds: how long a taken or renewed lease lasts.
    """

    def __init__(self, db: Runner, duty: str, seconds: float) -> None:
        self.db = db
        self.duty = duty
        self.seconds = seconds
        self.holder = uuid.uuid4()
        self.held = False
        self.elected = True  # False once the role turned out unable to write the leases

    def hold(self) -> bool:
        """Take or renew the lease: whether this process runs the duty now.

        A role granted its access before the leases existed may not write them:
        its processes then run the duty each, as before, and say so once.
        """
        if not self.elected:
            return True
        try:
            self.held = self.db.run(
                q.workers.take_maintenance(
                    duty=self.duty,
                    holder=self.holder,
                    host=socket.gethostname(),
                    pid=os.getpid(),
                    seconds=self.seconds,
                )
            )
        except PermissionDeniedError:
            log.warning(
                "this role may not take turns at %s; every process runs it: "
                "run `omnispindle grant` for it again",
                self.duty,
            )
            self.elected = False
            return True
        return self.held

    def give_up(self) -> None:
        """Hand the duty on at once, if this process holds it."""
        if self.held and self.elected:
            self.db.run(q.workers.give_up_maintenance(self.holder))
            self.held = False
