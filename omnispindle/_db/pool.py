"""Connections: the queue's pool, and the caller's own connection to join."""

from __future__ import annotations

import contextlib
from typing import Any, Iterable, Mapping

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from omnispindle._db.sqlstate import translated_errors
from omnispindle.errors import ConfigurationError
from omnispindle._db.statements import query


class Database:
    """A pool of autocommit connections to one database, running named statements.

    Args:
        dsn: libpq connection string or URI.
        max_size: most connections the pool opens.
    """

    def __init__(self, dsn: str, *, max_size: int = 10) -> None:
        self.dsn = dsn
        self.pool = ConnectionPool(
            dsn,
            min_size=1,
            max_size=max_size,
            kwargs={"autocommit": True},
            open=True,
            name="omnispindle",
        )

    def fetch(self, name: str, params: Mapping[str, Any] | None = None,
              *, connection: Any = None) -> list[dict[str, Any]]:
        """Run the named statement and return its rows as dicts.

        Args:
            name: a statement in ``sql/queries``.
            params: its bound parameters.
            connection: the caller's connection (psycopg, or SQLAlchemy
                ``Session``/``Connection``); the statement then joins the
                caller's transaction instead of committing on its own.
        """
        if connection is not None:
            return run(as_psycopg(connection), name, params)
        with self.pool.connection() as conn:
            return run(conn, name, params)

    def fetch_each(self, name: str, params: Iterable[Mapping[str, Any]],
                   *, connection: Any = None) -> list[list[dict[str, Any]]]:
        """Run the named statement once per parameter set, in one transaction
        (all or nothing) and pipelined; the rows of each run, in order.

        ``params`` may be a generator: the server runs one statement while the
        next set is made, and an exception from it rolls everything back.
        """
        if connection is not None:
            return run_each(as_psycopg(connection), name, params)
        with self.pool.connection() as conn:
            return run_each(conn, name, params)

    def connect(self) -> psycopg.Connection:
        """Open a dedicated autocommit connection outside the pool (e.g. for LISTEN)."""
        return psycopg.connect(self.dsn, autocommit=True)

    def close(self) -> None:
        self.pool.close()


def run(conn: psycopg.Connection, name: str,
        params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """Execute the named statement on ``conn``; return rows (empty if none)."""
    with translated_errors(), conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query(name), params)
        return cur.fetchall() if cur.description else []


def run_each(conn: psycopg.Connection, name: str,
             params: Iterable[Mapping[str, Any]]) -> list[list[dict[str, Any]]]:
    """Execute the named statement once per parameter set, pipelined in one
    transaction (a savepoint inside the caller's); rows of each run."""
    statement = query(name)
    cursors = []
    try:
        with translated_errors(), pipeline(conn), conn.transaction():
            for one in params:
                cursors.append(conn.cursor(row_factory=dict_row))
                cursors[-1].execute(statement, one)
        return [cur.fetchall() for cur in cursors]
    finally:
        for cur in cursors:
            cur.close()


def pipeline(conn: Any) -> Any:
    """Pipeline mode where libpq has it (14 and newer); else statements just
    take turns, in the same transaction."""
    return conn.pipeline() if psycopg.Pipeline.is_supported() else contextlib.nullcontext()


def as_psycopg(connection: Any) -> psycopg.Connection:
    """Return the psycopg connection behind a caller's connection object.

    Raises:
        ConfigurationError: it is neither psycopg 3 nor SQLAlchemy on psycopg.
    """
    if isinstance(connection, psycopg.Connection):
        return connection
    raw = _sqlalchemy_driver_connection(connection)
    if isinstance(raw, psycopg.Connection):
        return raw
    raise ConfigurationError(
        "connection= takes a psycopg 3 connection, or a SQLAlchemy Session or "
        "Connection using the psycopg driver (postgresql+psycopg://); "
        f"got {type(connection).__name__}"
    )


def _sqlalchemy_driver_connection(connection: Any) -> Any:
    try:
        from sqlalchemy.engine import Connection
        from sqlalchemy.orm import Session
    except ImportError:  # pragma: no cover - SQLAlchemy is a dependency
        return None
    if isinstance(connection, Session):
        connection = connection.connection()
    if isinstance(connection, Connection):
        if not connection.in_transaction():
            # Autobegin as SQLAlchemy's own execute would, so that the app's
            # commit() or rollback() covers this statement too.
            connection.begin()
        return connection.connection.driver_connection
    return None
