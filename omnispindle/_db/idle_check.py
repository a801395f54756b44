"""Pooled connections that sat idle are checked before use.

A restart or a killed backend leaves the pool holding dead connections, and
the first call on each would fail. Checking every connection before every use
costs a round trip per call; a connection in steady use is known to work, so
only one idle for a while is checked (and replaced by the pool if dead).
The time of last use is noted by the caller as it finishes with a connection:
a pool's ``reset`` callback would move every return onto the pool's worker
thread, which costs the hot path more than it saves.
"""

from __future__ import annotations

import time
import weakref
from typing import Any

from psycopg_pool import AsyncConnectionPool, ConnectionPool

IDLE_BEFORE_CHECK = 1.0  # seconds a connection may sit in the pool unchecked


class IdleCheck:
    """The ``check`` callback of one pool, and the note of each connection's last use."""

    def __init__(self, after: float | None = None) -> None:
        self.after = IDLE_BEFORE_CHECK if after is None else after
        self._returned: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()

    def used(self, conn: Any) -> None:
        """Note that ``conn`` worked just now (as it goes back to the pool)."""
        self._returned[conn] = time.monotonic()

    def check(self, conn: Any) -> None:
        """Called as a connection leaves the pool: raises if an idle one is dead."""
        if self._idle(conn):
            ConnectionPool.check_connection(conn)

    async def check_async(self, conn: Any) -> None:
        if self._idle(conn):
            await AsyncConnectionPool.check_connection(conn)

    def _idle(self, conn: Any) -> bool:
        return time.monotonic() - self._returned.get(conn, 0.0) > self.after
