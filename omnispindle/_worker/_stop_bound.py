"""How long a stopping worker may still spend on the database.

Once a stop is asked, the worker has ``shutdown_timeout`` seconds: its
executors may finish, and what they return is stored, if the database lets
it. No call waits past the deadline for a pooled connection (the database is
away), and the last statements (handing tasks back, deregistering) get
``LAST_WORDS`` seconds more. What could not be stored or handed back is left
to the leases, as after any stop that cannot reach the database.
"""

from __future__ import annotations

import threading
import time
from typing import TypeVar

from omnispindle._db.pool import Database
from omnispindle._db.query import Operation

T = TypeVar("T")
# Seconds past the deadline for the statements of a stop: enough for a reachable
# database, and all a stop adds to shutdown_timeout when it is not.
LAST_WORDS = 1.0


class StopBound:
    """Runs the worker's statements on ``db``; once a stop is asked, none waits
    for a connection past its deadline (one begun after it waits ``LAST_WORDS``).

    Args:
        db: the queue's database.
        shutdown_timeout: seconds from the stop asked to the deadline.
    """

    def __init__(self, db: Database, shutdown_timeout: float) -> None:
        self.db = db
        self.shutdown_timeout = shutdown_timeout
        self.deadline: float | None = None  # monotonic; None until a stop is asked
        self._lock = threading.Lock()

    def stop_asked(self) -> None:
        """Start the stop's clock (once); from any thread."""
        with self._lock:
            if self.deadline is None:
                self.deadline = time.monotonic() + self.shutdown_timeout

    def left(self) -> float:
        """Seconds until the deadline (infinite before a stop is asked)."""
        deadline = self.deadline
        return float("inf") if deadline is None else deadline - time.monotonic()

    def run(self, operation: Operation[T]) -> T:
        """Run ``operation``; after a stop is asked, within what is left of it."""
        if self.deadline is None:
            return self.db.run(operation)
        return self.db.run(operation, wait=max(self.left(), LAST_WORDS))

    def close(self) -> None:
        """The worker has stopped."""
