"""The blocking database: a pool of connections that runs operations.

An operation (see :mod:`omnispindle._db.query`) runs on a pooled autocommit
connection, or on the caller's own connection, inside the caller's
transaction. A process forked from the one that opened the pool opens a pool
of its own (see :attr:`Database.pool`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator
from typing import Any, TypeVar

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from omnispindle._core import defaults
from omnispindle._db.caller import CallerConnection, as_psycopg
from omnispindle._db.connecting import connect, connect_options, pin_session
from omnispindle._db.idle_check import IdleCheck
from omnispindle._db.in_flight import InFlight
from omnispindle._db.namespace import DEFAULT, Namespace
from omnispindle._db.outages import (
    POOL_NAME_PREFIX,
    Outage,
    busy_pool_error,
    no_connection,
    ours,
    quiet_pool_attempts,
    retry_while_waited_for,
)
from omnispindle._db.query import Atomic, Operation, Pipelined, Plan, Query, Row
from omnispindle._db.sqlstate import translated_errors
from omnispindle.errors import (
    ConfigurationError,
    DatabaseUnavailableError,
    ReadOnlyDatabaseError,
)

T = TypeVar("T")
# Every statement run, at DEBUG level with its parameters (record attribute ``params``).
sql_log = logging.getLogger("omnispindle.sql")
log = logging.getLogger("omnispindle")
Connection = psycopg.Connection[Any]


class Database:
    """A pool of autocommit connections to one database.

    Args:
        dsn: libpq connection string or URI.
        max_size: most connections the pool opens.
        namespace: the schema the queue lives in.
        timeout: seconds a call waits for a pooled connection before it fails
            with ``DatabaseUnavailableError`` (the database is down, or every
            connection is busy).
        pooler: the DSN leads to a pooler in transaction mode: prepare nothing.
        name: the pool's name in the log (``"omnispindle replica"``).
        wait: wait for the pool's first connection before returning.
    """

    def __init__(
        self,
        dsn: str,
        *,
        max_size: int = 10,
        namespace: Namespace = DEFAULT,
        timeout: float = defaults.POOL_TIMEOUT,
        pooler: bool = False,
        name: str = POOL_NAME_PREFIX,
        wait: bool = True,
    ) -> None:
        self.dsn = dsn
        self.namespace = namespace
        self.timeout = timeout
        self.outage = Outage(name, log)
        quiet_pool_attempts()
        self._idle = IdleCheck()
        self._max_size, self._pooler, self._name = max_size, pooler, name
        self._pool = self._new_pool()
        self._pid = os.getpid()  # of the process that opened _pool
        self._closed = False
        self._reopening = threading.Lock()
        self._parents_pool: ConnectionPool[Connection] | None = None
        if wait:
            self._wait_for_first(timeout)

    def _new_pool(self) -> ConnectionPool[Connection]:
        """A pool of autocommit connections, opening (and reopening) them in the background."""
        return ConnectionPool(
            self.dsn,
            min_size=1,
            max_size=self._max_size,
            kwargs={"autocommit": True, **connect_options(self.dsn, pooler=self._pooler)},
            open=True,
            name=self._name,
            timeout=self.timeout,
            # The pool retries a failed connect with doubling pauses until this
            # many seconds have passed, then starts afresh on the next call:
            # a call is never more than a few seconds behind the database's return.
            reconnect_timeout=defaults.RECONNECT_WINDOW,
            reconnect_failed=retry_while_waited_for,
            configure=self._configure,
            max_idle=defaults.POOL_MAX_IDLE,
        )

    def _configure(self, conn: Connection) -> None:
        """The pool's ``configure`` step: each new connection noted as this
        package's and given the settings its statements depend on."""
        ours(conn)
        pin_session(conn, pooler=self._pooler)

    @property
    def pool(self) -> ConnectionPool[Connection]:
        """This process's pool.

        A process forked after the pool opened holds copies of the parent's
        connections, whose sockets the parent goes on using: statements sent on
        them by both would cross their replies. The child opens a pool of its
        own on first use.
        """
        if self._pid != os.getpid():
            self._open_own_pool()
        return self._pool

    def _open_own_pool(self) -> None:
        """In a forked child: replace the parent's pool, leaving it untouched."""
        with self._reopening:
            if self._pid == os.getpid():
                return  # another thread of this child opened it
            # Kept, never closed nor collected: closing would stop the parent's
            # sessions, and its locks may have been held by threads the child lacks.
            self._parents_pool = self._pool
            self._pool = self._new_pool()
            self._pid = os.getpid()

    def _wait_for_first(self, timeout: float) -> None:
        """Have the first connection made before any call: a call while it is still
        being made would have the pool open a second, held for no use.

        Raises:
            DatabaseUnavailableError: no connection within ``timeout`` seconds.
        """
        try:
            self.pool.wait(timeout)
        except PoolTimeout as exc:
            raise DatabaseUnavailableError(
                f"the database is unavailable: no connection within {timeout:g} s"
            ) from exc

    def run(
        self,
        operation: Operation[T],
        *,
        connection: CallerConnection | None = None,
        wait: float | None = None,
        in_flight: InFlight | None = None,
    ) -> T:
        """Run an operation and return its result.

        Args:
            connection: the caller's connection (psycopg, or SQLAlchemy
                ``Session``/``Connection``); the operation then joins the
                caller's transaction instead of committing on its own.
            wait: seconds at most to wait for a pooled connection, when less
                than the pool's timeout (what is left of a wait's timeout).
            in_flight: notes the pooled connection while the operation runs,
                so that another thread may cancel it.

        Raises:
            OmnispindleError: the typed error of a database error that has one.
            psycopg.Error: any other database error.
        """
        if connection is not None:
            return execute(as_psycopg(connection), operation, self.namespace)
        self.refuse_if_closed()
        wait = self._wait_at_most(wait)
        try:
            with translated_errors(), self._connection(wait) as conn:
                with _noted(in_flight, conn):
                    result = execute(conn, operation, self.namespace)
                self._idle.used(conn)
        except DatabaseUnavailableError as exc:
            # A busy pool is no outage: said so, and nothing logged.
            busy = busy_pool_error(self.pool, wait) if no_connection(exc) else None
            if busy is not None:
                raise busy from exc.__cause__
            self.outage.lost(exc)
            if not exc.unsent:
                self._replace_dead()  # the others of its time may be dead too
            raise
        self.outage.restored()
        return result

    def _wait_at_most(self, wait: float | None) -> float:
        """Seconds to wait for a pooled connection: the pool's timeout, or less."""
        return self.timeout if wait is None else min(wait, self.timeout)

    @contextlib.contextmanager
    def _connection(self, wait: float) -> Iterator[Connection]:
        """A pooled connection that works, as far as is known cheaply (see
        ``idle_check``), within ``wait`` seconds; finding a dead one, the pool
        first replaces every dead one it holds (a restart, killed backends)."""
        for _ in range(2):
            with self.pool.connection(wait) as conn:
                if self._idle.alive(conn):
                    with _dropped_if_read_only(conn):
                        yield conn
                    return
            self._replace_dead()
        with self.pool.connection(wait) as conn, _dropped_if_read_only(conn):
            yield conn

    def _replace_dead(self) -> None:
        """Have the pool check the connections it holds and replace the dead ones."""
        with contextlib.suppress(psycopg.Error):  # a closing pool: nothing to replace
            self.pool.check()

    def read(self, query: Query[T]) -> T:
        """Run a query that only reads, once more if its connection was lost under it
        (a restart, a killed backend): nothing it did can have mattered.

        Raises:
            DatabaseUnavailableError: the database is still unreachable.
        """
        try:
            return self.run(query)
        except DatabaseUnavailableError as exc:
            if exc.unsent:  # no connection within the wait: the database is away
                raise
            return self.run(query)

    def connect(self) -> Connection:
        """Open a dedicated autocommit connection outside the pool (e.g. for LISTEN).

        Raises:
            DatabaseUnavailableError: the database cannot be reached.
        """
        return connect(self.dsn, pooler=self._pooler)

    def close(self) -> None:
        """Close the pool's connections (in a forked child, those it opened itself)."""
        self._closed = True
        if self._pid == os.getpid():
            self._pool.close()

    def refuse_if_closed(self) -> None:
        """Raise ConfigurationError once closed: a closed pool is no outage to wait out.

        Raises:
            ConfigurationError: :meth:`close` was called.
        """
        if self._closed:
            raise ConfigurationError(
                "this queue was shut down (close() or shutdown() was called): "
                "open a new TaskQueue or client"
            )


@contextlib.contextmanager
def _dropped_if_read_only(conn: Connection) -> Iterator[None]:
    """Close a connection that only allows reads, so that the pool opens another: the
    DSN may lead to the primary again after a failover, and a read-only default is
    read only when a session starts."""
    try:
        yield
    except ReadOnlyDatabaseError:
        conn.close()
        raise


def _noted(in_flight: InFlight | None, conn: Connection) -> contextlib.AbstractContextManager[Any]:
    return contextlib.nullcontext() if in_flight is None else in_flight.running_on(conn)


def execute(conn: Connection, operation: Operation[T], namespace: Namespace = DEFAULT) -> T:
    """Run an operation on ``conn``, on the tables of ``namespace``."""
    _settle(conn)
    if isinstance(operation, Query):
        return _one(conn, operation, namespace)
    if isinstance(operation, Atomic):
        with translated_errors(), conn.transaction():
            return _drive(conn, operation.plan, namespace)
    if isinstance(operation, Pipelined):
        return _pipelined(conn, operation, namespace)
    return _drive(conn, operation, namespace)


def _one(conn: Connection, query: Query[T], namespace: Namespace) -> T:
    _log(query)
    with translated_errors(), _cursor(conn) as cur:
        with _answered(conn):
            cur.execute(namespace.text(query.statement), query.params)
        found: list[Row] = cur.fetchall() if cur.description else []
    return query.read(found)


def _cursor(conn: Connection) -> psycopg.Cursor[Row]:
    """A cursor of psycopg's own class on ``conn``, whatever ``cursor_factory`` a
    caller's connection has: our statements take named parameters, which a
    ``RawCursor`` refuses, and are bound by the server."""
    return psycopg.Cursor(conn, row_factory=dict_row)


def _settle(conn: Connection) -> None:
    """On a caller's connection in pipeline mode, have the caller's statements still
    in flight answered before ours are sent: an error of theirs is raised as it is,
    never translated as if one of ours had failed. A nested block syncs on its way out."""
    if conn.info.pipeline_status != psycopg.pq.PipelineStatus.OFF:
        with conn.pipeline():
            pass


def _answered(conn: Connection) -> contextlib.AbstractContextManager[Any]:
    """On a caller's connection in pipeline mode, a pipeline block of its own,
    whose end syncs: the statement's rows (and its error) arrive then, not at
    the caller's next sync, and without them its result would read as no rows."""
    if conn.info.pipeline_status == psycopg.pq.PipelineStatus.OFF:
        return contextlib.nullcontext()
    return conn.pipeline()


def _drive(conn: Connection, plan: Plan[T], namespace: Namespace) -> T:
    """Run each query the plan yields, sending it the result, until it returns."""
    try:
        query = next(plan)
        while True:
            query = plan.send(_one(conn, query, namespace))
    except StopIteration as done:
        result: T = done.value
        return result


def _pipelined(conn: Connection, operation: Pipelined[Any, T], namespace: Namespace) -> T:
    """The queries, pipelined in one transaction (a savepoint inside the caller's):
    the generator of queries runs while the server works, and an exception from
    it rolls everything back."""
    sent: list[tuple[Query[Any], psycopg.Cursor[Row]]] = []
    try:
        with translated_errors(), _pipeline(conn), conn.transaction():
            for query in operation.queries:
                _log(query)
                sent.append((query, _cursor(conn)))
                sent[-1][1].execute(namespace.text(query.statement), query.params)
        return operation.combine([query.read(cur.fetchall()) for query, cur in sent])
    finally:
        for _, cur in sent:
            cur.close()


def _log(query: Query[Any]) -> None:
    if sql_log.isEnabledFor(logging.DEBUG):
        sql_log.debug("%s", query.statement.name, extra={"params": query.params})


def _pipeline(conn: Connection) -> contextlib.AbstractContextManager[Any]:
    """Pipeline mode where libpq has it (14 and newer); else statements just
    take turns, in the same transaction."""
    return conn.pipeline() if psycopg.Pipeline.is_supported() else contextlib.nullcontext()
