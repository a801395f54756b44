"""Outages of one kind of connection, logged once when each starts and once,
with its length, when it ends; and psycopg_pool's own line per failed attempt
kept out of the log."""

from __future__ import annotations

import logging
import threading
import time
import weakref
from typing import Any

from omnispindle.errors import DatabaseUnavailableError, ReadOnlyDatabaseError, first_line

# Every pool this package opens is named so; see quiet_pool_attempts.
POOL_NAME_PREFIX = "omnispindle"
# Every connection those pools open (see ours): the pool's lines about one of
# them ("discarding closed connection: ...") name the connection, not the pool.
_OUR_CONNECTIONS: weakref.WeakSet[Any] = weakref.WeakSet()


class Outage:
    """The state of one connection's outage: ``lost`` at each failure, ``restored``
    at each success; only the first failure and the first success after it log.

    Args:
        what: what lost its connection, for the log (``"the LISTEN connection"``).
        logger: where the two lines go.
    """

    def __init__(self, what: str, logger: logging.Logger) -> None:
        self.what = what
        self._log = logger
        self._since: float | None = None
        self._lock = threading.Lock()

    @property
    def ongoing(self) -> bool:
        """True between a failure and the next success."""
        return self._since is not None

    def lost(self, cause: BaseException) -> None:
        """A failure: log the outage's start, unless one is already under way."""
        with self._lock:
            if self._since is not None:
                return
            self._since = time.monotonic()
        self._log.warning("%s lost the database (%s); retrying", self.what, first_line(cause))

    def restored(self) -> None:
        """A success: log the outage's end and length, if one was under way."""
        if self._since is None:  # the common case, without the lock
            return
        with self._lock:
            since, self._since = self._since, None
        if since is not None:
            self._log.warning(
                "%s reached the database again after %.1f s", self.what, time.monotonic() - since
            )


def no_connection(exc: DatabaseUnavailableError) -> bool:
    """True when a call had no connection in time (a busy pool, or the database away);
    not for a database that refused it as read only, though nothing was written either."""
    return exc.unsent and not isinstance(exc, ReadOnlyDatabaseError)


def busy_pool_error(pool: Any, wait: float) -> DatabaseUnavailableError | None:
    """The error of a wait for a pooled connection that timed out while every
    connection the pool may hold was open and lent out: the pool is busy, and the
    database may be fine. None otherwise (the database is away)."""
    stats = pool.get_stats()
    if stats.get("pool_size", 0) < stats.get("pool_max", 1) or stats.get("pool_available", 0):
        return None
    error = DatabaseUnavailableError(
        f"no connection free within {wait:g} s: all {stats['pool_max']} connections of "
        "the pool are in use (pool_size sets how many)"
    )
    error.unsent = True
    return error


def ours(conn: Any) -> None:
    """A pool's ``configure`` callback: note a connection as this package's."""
    _OUR_CONNECTIONS.add(conn)


async def ours_async(conn: Any) -> None:
    """:func:`ours`, for an asyncio pool."""
    ours(conn)


def retry_while_waited_for(pool: Any) -> None:
    """A pool's ``reconnect_failed`` callback: start another reconnect run at once
    if callers wait for a connection.

    psycopg_pool starts a run only when a caller starts to wait; a caller that
    queued while a run was under way waited out its whole timeout after that run
    gave up, though the database came back meanwhile. ``check`` grows a pool that
    has no connection."""
    if pool.get_stats().get("requests_waiting", 0):
        pool.check()


async def retry_while_waited_for_async(pool: Any) -> None:
    """:func:`retry_while_waited_for`, for an asyncio pool."""
    if pool.get_stats().get("requests_waiting", 0):
        await pool.check()


class _PoolAttempts(logging.Filter):
    """Drops psycopg_pool's lines per failed connection attempt and per discarded
    connection of this package's pools: an outage is logged once, by its Outage."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        if not args or record.levelno > logging.WARNING:
            return True
        first = args[0]
        if isinstance(first, str):
            return not first.startswith(POOL_NAME_PREFIX)
        try:
            return first not in _OUR_CONNECTIONS
        except TypeError:  # not a connection, and unhashable
            return True


_FILTER = _PoolAttempts()


def quiet_pool_attempts() -> None:
    """Install the filter on psycopg_pool's logger (once; other pools' lines pass)."""
    pool_log = logging.getLogger("psycopg.pool")
    if _FILTER not in pool_log.filters:
        pool_log.addFilter(_FILTER)
