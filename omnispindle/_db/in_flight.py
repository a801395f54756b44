"""The statement a caller has in flight, which another thread may cancel.

A worker asked to stop must not wait for ever on a statement blocked by a
lock, or on a server that stopped answering: past its deadline, the thread
that stops it cancels what the worker's thread runs.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import psycopg

# Seconds a cancel request may take to reach the server: it opens a connection of its own.
CANCEL_TIMEOUT = 2.0


class InFlight:
    """The connection one caller's statement runs on, while it runs."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[Any] | None = None

    @contextlib.contextmanager
    def running_on(self, conn: psycopg.Connection[Any]) -> Iterator[None]:
        """Note ``conn`` as running the caller's statement until the block ends."""
        with self._lock:
            self._conn = conn
        try:
            yield
        finally:
            # Under the lock: a cancel under way finishes before the connection
            # goes back to the pool, where it would reach another caller's statement.
            with self._lock:
                self._conn = None

    def cancel(self) -> None:
        """Cancel the statement in flight, if any; from any thread."""
        with self._lock:
            if self._conn is not None:
                with contextlib.suppress(psycopg.Error):
                    self._conn.cancel_safe(timeout=CANCEL_TIMEOUT)
