"""Outages of one kind of connection, logged once when each starts and once,
with its length, when it ends; and psycopg_pool's own line per failed attempt
kept out of the log."""

from __future__ import annotations

import logging
import threading
import time

from omnispindle.errors import first_line

# Every pool this package opens is named so; see quiet_pool_attempts.
POOL_NAME_PREFIX = "omnispindle"


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


class _PoolAttempts(logging.Filter):
    """Drops psycopg_pool's line per failed connection attempt of this package's
    pools: an outage is logged once, by its Outage."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        ours = bool(args) and str(args[0]).startswith(POOL_NAME_PREFIX)
        return not (ours and record.levelno <= logging.WARNING)


_FILTER = _PoolAttempts()


def quiet_pool_attempts() -> None:
    """Install the filter on psycopg_pool's logger (once; other pools' lines pass)."""
    pool_log = logging.getLogger("psycopg.pool")
    if _FILTER not in pool_log.filters:
        pool_log.addFilter(_FILTER)
