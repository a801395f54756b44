"""How long a stopping worker may still spend on the database.

Once a stop is asked, the worker has ``shutdown_timeout`` seconds: its
executors may finish, and what they return is stored, if the database lets
it. A statement still running at the deadline (one blocked by a lock) is
cancelled, no call waits past it for a pooled connection (the database is
away), and the last statements (handing tasks back, deregistering) get
``LAST_WORDS`` seconds more. What could not be stored or handed back is left
to the leases, as after any stop that cannot reach the database.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

from omnispindle._db.in_flight import InFlight
from omnispindle._db.pool import Database
from omnispindle._db.query import Operation

T = TypeVar("T")
# Seconds past the deadline for the statements of a stop: enough for a reachable
# database, and all a stop adds to shutdown_timeout when it is not.
LAST_WORDS = 1.0


class StopBound:
    """Runs the worker's statements on ``db``; once a stop is asked, none outlasts
    its deadline (a statement begun after it gets ``LAST_WORDS``).

    Args:
        db: the queue's database.
        shutdown_timeout: seconds from the stop asked to the deadline.
    """

    def __init__(self, db: Database, shutdown_timeout: float) -> None:
        self.db = db
        self.shutdown_timeout = shutdown_timeout
        self.in_flight = InFlight()
        self.deadline: float | None = None  # monotonic; None until a stop is asked
        self._lock = threading.Lock()
        self._stop_timer: threading.Timer | None = None
        self._own_cutoff = False  # the statement in flight has a cutoff of its own

    def stop_asked(self) -> None:
        """Start the stop's clock (once); from any thread. The statement in flight
        now is cancelled if it still runs at the deadline."""
        with self._lock:
            if self.deadline is not None:
                return
            self.deadline = time.monotonic() + self.shutdown_timeout
            self._stop_timer = self._cancel_in(self.shutdown_timeout, self._cancel_unbounded)

    def cut_short(self) -> None:
        """Move the deadline to now (a second stop signal): running executors are
        not waited for, and the statement in flight is cancelled."""
        self.stop_asked()
        with self._lock:
            self.deadline = time.monotonic()
        self.in_flight.cancel()

    def left(self) -> float:
        """Seconds until the deadline (infinite before a stop is asked)."""
        deadline = self.deadline
        return float("inf") if deadline is None else deadline - time.monotonic()

    def run(self, operation: Operation[T]) -> T:
        """Run ``operation``; after a stop is asked, within what is left of it."""
        if self.deadline is None:
            return self.db.run(operation, in_flight=self.in_flight)
        budget = max(self.left(), LAST_WORDS)
        cutoff = self._cancel_in(budget, self.in_flight.cancel)
        self._own_cutoff = True
        try:
            return self.db.run(operation, wait=budget, in_flight=self.in_flight)
        finally:
            self._own_cutoff = False
            cutoff.cancel()

    def close(self) -> None:
        """The worker has stopped: nothing is left to cancel."""
        with self._lock:
            if self._stop_timer is not None:
                self._stop_timer.cancel()

    def _cancel_unbounded(self) -> None:
        """At the deadline: cancel a statement begun before the stop was asked."""
        if not self._own_cutoff:
            self.in_flight.cancel()

    def _cancel_in(self, seconds: float, cancel: Callable[[], None]) -> threading.Timer:
        timer = threading.Timer(seconds, cancel)
        timer.daemon = True
        timer.start()
        return timer
