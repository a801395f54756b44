"""The backlog a supervisor's worker processes face, read on one connection of its own.

No pool: a pool runs threads, and the supervisor forks its children with a
function to run between fork and exec, which threads make unsafe. The one
connection is opened on first use and again after it broke.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Sequence
from typing import Any

import psycopg

from omnispindle._db import queries as q
from omnispindle._db.connecting import connect
from omnispindle._db.namespace import Namespace
from omnispindle._db.pool import execute
from omnispindle._db.rows import ProcessBacklog
from omnispindle.errors import OmnispindleError, first_line

log = logging.getLogger("omnispindle.cli")


class BacklogReader:
    """Reads what the worker processes with given pids on this host could claim and run.

    Args:
        dsn: the queue's database.
        schema: the queue's schema (None: the default).
        pooler: the DSN leads to a pooler in transaction mode: prepare nothing.
    """

    def __init__(self, dsn: str, *, schema: str | None = None, pooler: bool = False) -> None:
        self.dsn, self.pooler = dsn, pooler
        self.namespace = Namespace.chosen(schema)
        self.host = socket.gethostname()
        self._conn: psycopg.Connection[Any] | None = None
        self._failing = False
        self._cancelled = False

    def read(self, pids: Sequence[int], limit: int) -> ProcessBacklog | None:
        """The backlog, its ready count capped at ``limit``; None when the database
        cannot answer (logged once per outage)."""
        try:
            found = execute(
                self._connection(),
                q.workers.process_backlog(host=self.host, pids=pids, limit=limit),
                self.namespace,
            )
        except (psycopg.Error, OmnispindleError) as exc:
            self.close()
            if not (self._failing or self._cancelled):
                log.warning("cannot read the backlog to scale on (%s); retrying", first_line(exc))
            self._failing = True
            return None
        if self._failing:
            log.info("the backlog can be read again")
        self._failing = False
        return found

    def cancel(self) -> None:
        """Cancel a read under way (one a lock holds up): the supervisor was asked
        to stop. Safe in a signal handler of the reading thread: libpq's cancel
        request takes no lock."""
        self._cancelled = True
        conn = self._conn
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                conn.cancel()

    def close(self) -> None:
        """Close the connection, if open."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = connect(self.dsn, pooler=self.pooler)
        return self._conn
