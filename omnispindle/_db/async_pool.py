"""The asyncio database: the twin of :mod:`omnispindle._db.pool` for an event loop.

It runs the same operations (see :mod:`omnispindle._db.query`); only the
awaiting differs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any, TypeVar

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from omnispindle._core import defaults
from omnispindle._db.caller import AsyncCallerConnection, as_async_psycopg
from omnispindle._db.connecting import connect_async, connect_options, pin_session_async
from omnispindle._db.idle_check import IdleCheck
from omnispindle._db.namespace import DEFAULT, Namespace
from omnispindle._db.outages import (
    POOL_NAME_PREFIX,
    Outage,
    busy_pool_error,
    no_connection,
    ours_async,
    quiet_pool_attempts,
    retry_while_waited_for_async,
)
from omnispindle._db.query import Atomic, Operation, Pipelined, Plan, Query, Row
from omnispindle._db.schema_state import require_current, schema_state
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
AsyncConnection = psycopg.AsyncConnection[Any]


class AsyncDatabase:
    """A pool of autocommit async connections to one database, opened with :meth:`open`.

    Args:
        dsn: libpq connection string or URI.
        max_size: most connections the pool opens.
        namespace: the schema the queue lives in.
        timeout: seconds a call waits for a pooled connection, as in the blocking twin.
        pooler: the DSN leads to a pooler in transaction mode: prepare nothing.
    """

    def __init__(
        self,
        dsn: str,
        *,
        max_size: int = 10,
        namespace: Namespace = DEFAULT,
        timeout: float = defaults.POOL_TIMEOUT,
        pooler: bool = False,
    ) -> None:
        self.dsn = dsn
        self.namespace = namespace
        self.timeout = timeout
        self.pooler = pooler
        self.outage = Outage("omnispindle (asyncio)", log)
        self._idle = IdleCheck()
        self.max_size = max_size
        self.pool: AsyncConnectionPool[AsyncConnection] | None = None
        # The loop the pool was opened on: its connections and tasks belong to it.
        self._loop: asyncio.AbstractEventLoop | None = None

    async def open(self) -> None:
        """Check the schema is installed, then open the pool (again a no-op when open).

        Raises:
            DatabaseUnavailableError: the database cannot be reached.
            SchemaMissingError: the database has no omnispindle schema, or
                (SchemaOutdatedError) an older one.
        """
        if self.pool is not None:
            self._open_pool()  # refuses a pool of another loop
            return
        # A connection of its own, so that a wrong DSN fails at once with the
        # server's reason rather than as a pool timeout.
        async with await connect_async(self.dsn, pooler=self.pooler) as conn:
            require_current(await execute(conn, schema_state(), self.namespace), self.namespace)
        pool: AsyncConnectionPool[AsyncConnection] = AsyncConnectionPool(
            self.dsn,
            min_size=1,
            max_size=self.max_size,
            kwargs={"autocommit": True, **connect_options(self.dsn, pooler=self.pooler)},
            open=False,
            name=f"{POOL_NAME_PREFIX}-async",
            timeout=self.timeout,
            reconnect_timeout=defaults.RECONNECT_WINDOW,
            reconnect_failed=retry_while_waited_for_async,
            configure=self._configure,
            max_idle=defaults.POOL_MAX_IDLE,
        )
        quiet_pool_attempts()
        try:
            # Its first connection made before any call, as in the blocking twin.
            await pool.open(wait=True, timeout=self.timeout)
        except PoolTimeout as exc:
            raise DatabaseUnavailableError(
                f"the database is unavailable: no connection within {self.timeout:g} s"
            ) from exc
        self.pool, self._loop = pool, asyncio.get_running_loop()

    async def _configure(self, conn: AsyncConnection) -> None:
        """The pool's ``configure`` step, as in the blocking twin."""
        await ours_async(conn)
        await pin_session_async(conn, pooler=self.pooler)

    async def run(
        self,
        operation: Operation[T],
        *,
        connection: AsyncCallerConnection | None = None,
        wait: float | None = None,
    ) -> T:
        """Run an operation and return its result, as ``Database.run``.

        Args:
            connection: the caller's async connection (psycopg, or SQLAlchemy
                ``AsyncSession``/``AsyncConnection``); the operation then joins
                the caller's transaction instead of committing on its own.
            wait: seconds at most to wait for a pooled connection, when less
                than the pool's timeout (what is left of a wait's timeout).

        Raises:
            ConfigurationError: no ``connection`` and the pool is not open.
        """
        if connection is not None:
            return await execute(await as_async_psycopg(connection), operation, self.namespace)
        pool = self._open_pool()
        wait = self._wait_at_most(wait)
        try:
            with translated_errors():
                async with self._connection(pool, wait) as conn:
                    result = await execute(conn, operation, self.namespace)
                    self._idle.used(conn)
        except DatabaseUnavailableError as exc:
            # A busy pool is no outage: said so, and nothing logged.
            busy = busy_pool_error(pool, wait) if no_connection(exc) else None
            if busy is not None:
                raise busy from exc.__cause__
            self.outage.lost(exc)
            if not exc.unsent:
                await _replace_dead(pool)  # the others of its time may be dead too
            raise
        self.outage.restored()
        return result

    def _wait_at_most(self, wait: float | None) -> float:
        """Seconds to wait for a pooled connection: the pool's timeout, or less."""
        return self.timeout if wait is None else min(wait, self.timeout)

    @contextlib.asynccontextmanager
    async def _connection(
        self, pool: AsyncConnectionPool[AsyncConnection], wait: float
    ) -> AsyncIterator[AsyncConnection]:
        """A pooled connection the server has not closed, within ``wait`` seconds,
        as in the blocking twin."""
        for _ in range(2):
            async with pool.connection(wait) as conn:
                if await self._idle.alive_async(conn):
                    async with _dropped_if_read_only(conn):
                        yield conn
                    return
            await _replace_dead(pool)
        async with pool.connection(wait) as conn, _dropped_if_read_only(conn):
            yield conn

    async def read(self, query: Query[T]) -> T:
        """Run a query that only reads, as ``Database.read`` does."""
        try:
            return await self.run(query)
        except DatabaseUnavailableError as exc:
            if exc.unsent:
                raise
            return await self.run(query)

    def _open_pool(self) -> AsyncConnectionPool[AsyncConnection]:
        """The pool; ConfigurationError while it is not open, or open on another loop."""
        if self.pool is None:
            raise ConfigurationError(
                "the async client is not open: use `async with AsyncTaskQueueClient(...)` "
                "or `await client.open()` first"
            )
        if self._loop is not asyncio.get_running_loop():
            # Its tasks died with that loop: the pool would neither grow nor reconnect.
            raise ConfigurationError(
                "the async client was opened on another event loop: open one client per "
                "loop, or `await client.close()` and open it again on this one"
            )
        return self.pool

    async def close(self) -> None:
        """Close the pool's connections; a pool of another loop is only let go,
        since nothing of that loop can be awaited here."""
        pool, loop, self.pool, self._loop = self.pool, self._loop, None, None
        if pool is not None and loop is asyncio.get_running_loop():
            await pool.close()


@contextlib.asynccontextmanager
async def _dropped_if_read_only(conn: AsyncConnection) -> AsyncIterator[None]:
    """Close a connection that only allows reads, as in the blocking twin."""
    try:
        yield
    except ReadOnlyDatabaseError:
        await conn.close()
        raise


async def _replace_dead(pool: AsyncConnectionPool[AsyncConnection]) -> None:
    """Have the pool check the connections it holds and replace the dead ones."""
    with contextlib.suppress(psycopg.Error):  # a closing pool: nothing to replace
        await pool.check()


async def execute(
    conn: AsyncConnection, operation: Operation[T], namespace: Namespace = DEFAULT
) -> T:
    """Run an operation on ``conn``, on the tables of ``namespace``."""
    await _settle(conn)
    if isinstance(operation, Query):
        return await _one(conn, operation, namespace)
    if isinstance(operation, Atomic):
        with translated_errors():
            async with conn.transaction():
                return await _drive(conn, operation.plan, namespace)
    if isinstance(operation, Pipelined):
        return await _pipelined(conn, operation, namespace)
    return await _drive(conn, operation, namespace)


async def _one(conn: AsyncConnection, query: Query[T], namespace: Namespace) -> T:
    _log(query)
    with translated_errors():
        async with _cursor(conn) as cur:
            async with _answered(conn):
                await cur.execute(namespace.text(query.statement), query.params)
            found: list[Row] = await cur.fetchall() if cur.description else []
    return query.read(found)


def _cursor(conn: AsyncConnection) -> psycopg.AsyncCursor[Row]:
    """A cursor of psycopg's own class, whatever a caller's connection makes, as in
    the blocking twin."""
    return psycopg.AsyncCursor(conn, row_factory=dict_row)


async def _drive(conn: AsyncConnection, plan: Plan[T], namespace: Namespace) -> T:
    """Run each query the plan yields, sending it the result, until it returns."""
    try:
        query = next(plan)
        while True:
            query = plan.send(await _one(conn, query, namespace))
    except StopIteration as done:
        result: T = done.value
        return result


async def _pipelined(
    conn: AsyncConnection, operation: Pipelined[Any, T], namespace: Namespace
) -> T:
    """The queries, pipelined in one transaction, as in the blocking twin."""
    sent: list[tuple[Query[Any], psycopg.AsyncCursor[Row]]] = []
    try:
        with translated_errors():
            async with _pipeline(conn), conn.transaction():
                for query in operation.queries:
                    _log(query)
                    sent.append((query, _cursor(conn)))
                    await sent[-1][1].execute(namespace.text(query.statement), query.params)
        return operation.combine([query.read(await cur.fetchall()) for query, cur in sent])
    finally:
        for _, cur in sent:
            await cur.close()


async def _settle(conn: AsyncConnection) -> None:
    """The caller's statements in flight answered before ours, as in the blocking twin."""
    if conn.info.pipeline_status != psycopg.pq.PipelineStatus.OFF:
        async with conn.pipeline():
            pass


def _answered(conn: AsyncConnection) -> contextlib.AbstractAsyncContextManager[Any]:
    """A pipeline block of its own on a caller's connection in pipeline mode,
    as in the blocking twin."""
    if conn.info.pipeline_status == psycopg.pq.PipelineStatus.OFF:
        return contextlib.nullcontext()
    return conn.pipeline()


def _log(query: Query[Any]) -> None:
    if sql_log.isEnabledFor(logging.DEBUG):
        sql_log.debug("%s", query.statement.name, extra={"params": query.params})


def _pipeline(conn: AsyncConnection) -> contextlib.AbstractAsyncContextManager[Any]:
    """Pipeline mode where libpq has it, as in the blocking twin."""
    return conn.pipeline() if psycopg.AsyncPipeline.is_supported() else contextlib.nullcontext()
