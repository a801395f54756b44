"""Pooled connections are checked before use, as far as it is cheap.

A restart or a killed backend leaves the pool holding dead connections, and
the first call on each would fail; a write failing so cannot tell whether it
committed. Checking every connection by a round trip before every use costs
as much as the call, so: a connection idle for a while gets the round trip,
and any other is looked at without one (a server that ends a connection says
so and closes its socket, which a non-blocking read finds). The caller does
this, not the pool's ``check`` callback: the pool sleeps, with a growing
backoff, after each connection its callback refuses, and a restart leaves
several dead ones in a row.
The time of last use is noted by the caller as it finishes with a connection:
a pool's ``reset`` callback would move every return onto the pool's worker
thread, which costs the hot path more than it saves.
"""

from __future__ import annotations

import time
import weakref
from typing import Any

import psycopg
from psycopg import pq
from psycopg_pool import AsyncConnectionPool, ConnectionPool

IDLE_BEFORE_CHECK = 1.0  # seconds a connection may sit in the pool unchecked


class IdleCheck:
    """The note of each pooled connection's last use, and the check before the next."""

    def __init__(self, after: float | None = None) -> None:
        self.after = IDLE_BEFORE_CHECK if after is None else after
        self._returned: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()

    def used(self, conn: Any) -> None:
        """Note that ``conn`` worked just now (as it goes back to the pool)."""
        self._returned[conn] = time.monotonic()

    def alive(self, conn: Any) -> bool:
        """Whether a connection just taken from the pool works, as far as is known
        cheaply (a dead one is left broken, for the pool to drop)."""
        if not self._idle(conn):
            return not closed_by_server(conn)
        try:
            ConnectionPool.check_connection(conn)
        except psycopg.Error:
            return False
        return True

    async def alive_async(self, conn: Any) -> bool:
        """:meth:`alive` for an asyncio connection."""
        if not self._idle(conn):
            return not closed_by_server(conn)
        try:
            await AsyncConnectionPool.check_connection(conn)
        except psycopg.Error:
            return False
        return True

    def _idle(self, conn: Any) -> bool:
        return time.monotonic() - self._returned.get(conn, 0.0) > self.after


def closed_by_server(conn: Any) -> bool:
    """Whether the server ended the connection while it sat in the pool: it sent
    its reason, then closed the socket. Two non-blocking reads find both; a pool
    connection has nothing else to read."""
    pgconn = conn.pgconn
    try:
        pgconn.consume_input()
        pgconn.consume_input()
    except psycopg.OperationalError:
        return True
    return bool(pgconn.status != pq.ConnStatus.OK)
