"""Opening a connection that fails fast, with the cause in one typed error."""

from __future__ import annotations

import os
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from omnispindle._core import defaults
from omnispindle._db.adapters import ADAPTERS
from omnispindle.errors import DatabaseUnavailableError, first_line


def connect_options(dsn: str, *, pooler: bool = False) -> dict[str, Any]:
    """Keyword arguments for every connection to ``dsn``: this package's adapters,
    a connect timeout unless the DSN or ``$PGCONNECT_TIMEOUT`` sets one
    (libpq's default is to wait for as long as the network does), and on TCP,
    bounds on unacknowledged data and unanswered keepalives unless the DSN sets
    them (defaults.TCP_SETTINGS), so that a link cut off fails. Behind a
    pooler that hands each transaction to any server connection (PgBouncer in
    transaction mode), no statement is prepared: a prepared statement lives on
    one server connection."""
    options: dict[str, Any] = {"context": ADAPTERS}
    given = conninfo_to_dict(dsn)
    if not ("connect_timeout" in given or os.environ.get("PGCONNECT_TIMEOUT")):
        options["connect_timeout"] = defaults.CONNECT_TIMEOUT
    options |= {name: value for name, value in defaults.TCP_SETTINGS.items() if name not in given}
    if pooler:
        options["prepare_threshold"] = None
    return options


def connect(dsn: str, *, autocommit: bool = True) -> psycopg.Connection[Any]:
    """A connection to ``dsn``, by default in autocommit mode.

    Raises:
        DatabaseUnavailableError: the server cannot be reached in time, or refused
            the connection (wrong password, no such database): the server's reason.
    """
    try:
        return psycopg.connect(dsn, autocommit=autocommit, **connect_options(dsn))
    except psycopg.OperationalError as exc:
        raise unavailable(dsn, exc) from exc


async def connect_async(dsn: str) -> psycopg.AsyncConnection[Any]:
    """:func:`connect`'s asyncio twin."""
    try:
        return await psycopg.AsyncConnection.connect(dsn, autocommit=True, **connect_options(dsn))
    except psycopg.OperationalError as exc:
        raise unavailable(dsn, exc) from exc


def unavailable(dsn: str, exc: BaseException) -> DatabaseUnavailableError:
    """The typed error of a failed connection attempt: where to, and libpq's reason."""
    reason = first_line(exc).removeprefix("connection failed: ")
    error = DatabaseUnavailableError(f"cannot connect to the database {_where(dsn)}: {reason}")
    error.unsent = True
    return error


def _where(dsn: str) -> str:
    """``"app" at db.example:5432``, from what the DSN says (libpq's defaults aside)."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "(unparsable DSN)"
    place = params.get("host") or "the local socket"
    if params.get("port"):
        place = f"{place}:{params['port']}"
    name = params.get("dbname")
    return f"{name!r} at {place}" if name else f"at {place}"
