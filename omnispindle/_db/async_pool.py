"""The async twin of :mod:`omnispindle.connections`: a pool, and the caller's connection to join."""

from __future__ import annotations

import contextlib
from typing import Any, Iterable, Mapping

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from omnispindle._db.sqlstate import translated_errors
from omnispindle.errors import ConfigurationError, SchemaMissingError
from omnispindle._db.statements import query


class AsyncDatabase:
    """A pool of autocommit async connections to one database, running named statements.

    Args:
        dsn: libpq connection string or URI.
        max_size: most connections the pool opens.
    """

    def __init__(self, dsn: str, *, max_size: int = 10) -> None:
        self.dsn = dsn
        self.max_size = max_size
        self.pool: AsyncConnectionPool | None = None

    async def open(self) -> None:
        """Check the schema is installed, then open the pool (again a no-op when open).

        Raises:
            SchemaMissingError: the database has no omnispindle schema.
            psycopg.OperationalError: the database cannot be reached.
        """
        if self.pool is not None:
            return
        # A connection of its own, so that a wrong DSN fails at once with the
        # server's reason rather than as a pool timeout.
        async with await psycopg.AsyncConnection.connect(self.dsn, autocommit=True) as conn:
            if not (await run(conn, "schema_installed"))[0]["installed"]:
                raise SchemaMissingError(
                    "the database has no omnispindle schema: run `omnispindle migrate --dsn ...` "
                    "or create a TaskQueue on it once (it migrates)")
        pool = AsyncConnectionPool(self.dsn, min_size=1, max_size=self.max_size,
                                   kwargs={"autocommit": True}, open=False,
                                   name="omnispindle-async")
        await pool.open()
        self.pool = pool

    async def fetch(self, name: str, params: Mapping[str, Any] | None = None,
                    *, connection: Any = None) -> list[dict[str, Any]]:
        """Run the named statement and return its rows as dicts.

        Args:
            connection: the caller's async connection (psycopg, or SQLAlchemy
                ``AsyncSession``/``AsyncConnection``); the statement then joins
                the caller's transaction instead of committing on its own.

        Raises:
            ConfigurationError: no ``connection`` and the pool is not open.
        """
        if connection is not None:
            return await run(await as_async_psycopg(connection), name, params)
        async with self._open_pool().connection() as conn:
            return await run(conn, name, params)

    async def fetch_each(self, name: str, params: Iterable[Mapping[str, Any]],
                         *, connection: Any = None) -> list[list[dict[str, Any]]]:
        """Run the named statement once per parameter set, in one transaction
        and pipelined, as ``Database.fetch_each``; the rows of each run."""
        if connection is not None:
            return await run_each(await as_async_psycopg(connection), name, params)
        async with self._open_pool().connection() as conn:
            return await run_each(conn, name, params)

    def _open_pool(self) -> AsyncConnectionPool:
        """The pool; ConfigurationError while it is not open."""
        if self.pool is None:
            raise ConfigurationError(
                "the async client is not open: use `async with AsyncTaskQueueClient(...)` "
                "or `await client.open()` first")
        return self.pool

    async def close(self) -> None:
        if self.pool is not None:
            pool, self.pool = self.pool, None
            await pool.close()


async def run(conn: psycopg.AsyncConnection, name: str,
              params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """Execute the named statement on ``conn``; return rows (empty if none)."""
    with translated_errors():
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(query(name), params)
            return await cur.fetchall() if cur.description else []


async def run_each(conn: psycopg.AsyncConnection, name: str,
                   params: Iterable[Mapping[str, Any]]) -> list[list[dict[str, Any]]]:
    """Execute the named statement once per parameter set, pipelined in one
    transaction (a savepoint inside the caller's); rows of each run."""
    statement = query(name)
    cursors = []
    try:
        with translated_errors():
            async with pipeline(conn), conn.transaction():
                for one in params:
                    cursors.append(conn.cursor(row_factory=dict_row))
                    await cursors[-1].execute(statement, one)
        return [await cur.fetchall() for cur in cursors]
    finally:
        for cur in cursors:
            await cur.close()


def pipeline(conn: psycopg.AsyncConnection) -> Any:
    """Pipeline mode where libpq has it, as in the sync twin."""
    return conn.pipeline() if psycopg.AsyncPipeline.is_supported() else contextlib.nullcontext()


async def as_async_psycopg(connection: Any) -> psycopg.AsyncConnection:
    """Return the psycopg async connection behind a caller's connection object.

    Raises:
        ConfigurationError: it is neither a psycopg ``AsyncConnection`` nor a
            SQLAlchemy ``AsyncSession``/``AsyncConnection`` on psycopg.
    """
    if isinstance(connection, psycopg.AsyncConnection):
        return connection
    raw = await _sqlalchemy_driver_connection(connection)
    if isinstance(raw, psycopg.AsyncConnection):
        return raw
    raise ConfigurationError(
        "connection= takes a psycopg AsyncConnection, or a SQLAlchemy AsyncSession or "
        "AsyncConnection using the psycopg driver (postgresql+psycopg://); "
        f"got {type(connection).__name__}"
    )


async def _sqlalchemy_driver_connection(connection: Any) -> Any:
    try:
        from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
    except ImportError:  # pragma: no cover - SQLAlchemy is a dependency
        return None
    if isinstance(connection, AsyncSession):
        connection = await connection.connection()
    if isinstance(connection, AsyncConnection):
        if not connection.in_transaction():
            # Autobegin as SQLAlchemy's own execute would, so that the app's
            # commit() or rollback() covers this statement too.
            await connection.begin()
        raw = await connection.get_raw_connection()
        return raw.driver_connection
    return None
