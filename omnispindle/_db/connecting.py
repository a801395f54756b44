"""Opening a connection that fails fast, with the cause in one typed error."""

from __future__ import annotations

import os
import re
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from omnispindle._core import defaults
from omnispindle._db.adapters import ADAPTERS
from omnispindle._db.queries import setup
from omnispindle._db.sqlstate import translated_errors
from omnispindle.errors import ConfigurationError, DatabaseUnavailableError, first_line

# A fragment libpq quotes in its reason: a whole word, as in ``token: "..."``.
_QUOTED = re.compile(r'(?<!\S)"([^"]*)"(?=[\s:,.]|$)')


def connect_options(dsn: str, *, pooler: bool = False) -> dict[str, Any]:
    """Keyword arguments for every connection to ``dsn``: this package's adapters,
    a connect timeout unless the DSN or ``$PGCONNECT_TIMEOUT`` sets one
    (libpq's default is to wait for as long as the network does), and on TCP,
    bounds on unacknowledged data and unanswered keepalives unless the DSN sets
    them (defaults.TCP_SETTINGS), so that a link cut off fails. Behind a
    pooler that hands each transaction to any server connection (PgBouncer in
    transaction mode), no statement is prepared: a prepared statement lives on
    one server connection. The client encoding is always UTF-8, whatever the
    DSN, ``$PGCLIENTENCODING``, the database or the role says: in another
    (LATIN1) text it cannot carry failed to encode, and in SQL_ASCII every text
    came back as bytes. A pooler takes it as one of the settings it carries over."""
    options: dict[str, Any] = {"context": ADAPTERS, "client_encoding": "UTF8"}
    given = dsn_params(dsn)
    if not ("connect_timeout" in given or os.environ.get("PGCONNECT_TIMEOUT")):
        options["connect_timeout"] = defaults.CONNECT_TIMEOUT
    options |= {name: value for name, value in defaults.TCP_SETTINGS.items() if name not in given}
    if pooler:
        options["prepare_threshold"] = None
    return options


def dsn_params(dsn: str, what: str = "DSN") -> dict[str, Any]:
    """The parameters ``dsn`` gives; ``what`` names it in the error.

    Raises:
        ConfigurationError: libpq cannot parse it; its reason, without what it
            quoted of the DSN but an option's name.
    """
    try:
        return conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        reason = _unquoted(first_line(exc), dsn)
        # Not chained: libpq quotes the DSN, a password included (an unescaped %
        # in a URI's password, a URI cut short), and a traceback shows the cause.
        raise ConfigurationError(f"the {what} cannot be parsed: {reason}") from None


def check_other_dsns(listen_dsn: str | None, read_dsn: str | None) -> None:
    """Refuse a ``listen_dsn`` or ``read_dsn`` libpq cannot parse, before anything
    starts: used later, in a thread of its own or at a first read, it would fail
    there, and the queue run on without it.

    Raises:
        ConfigurationError: as ``dsn_params``, naming which one.
    """
    for what, given in (("listen_dsn", listen_dsn), ("read_dsn", read_dsn)):
        if given is not None:
            dsn_params(given, what)


def _unquoted(reason: str, dsn: str) -> str:
    """libpq's ``reason`` with each fragment of the DSN it quotes masked, but for
    an option's name; cut at its first quote if a quote it quoted leaves doubt."""

    def mask(match: re.Match[str]) -> str:
        text = match.group(1)
        named = re.fullmatch(r"\w+", text) and re.search(rf"(^|[\s?&]){text}\s*=", dsn)
        sign = re.fullmatch(r"[^\w\s]", text)  # "=" or "]" libpq looked for
        return match.group(0) if sign or named else '"..."'

    masked = _QUOTED.sub(mask, reason)
    if _QUOTED.sub("", masked).count('"'):
        return reason.partition('"')[0].rstrip(" :")
    return masked


def pin_session(conn: psycopg.Connection[Any], *, pooler: bool = False) -> None:
    """Give a new connection the settings this package's statements depend on,
    over those the database or role sets (see ``pin_session`` in ``setup.sql``);
    behind a pooler in transaction mode, only those it carries over."""
    with translated_errors():
        pin = setup.pin_session(pooler=pooler)
        conn.execute(pin.statement.text, pin.params)
        if not conn.autocommit:
            conn.commit()


async def pin_session_async(conn: psycopg.AsyncConnection[Any], *, pooler: bool = False) -> None:
    """:func:`pin_session`'s asyncio twin."""
    with translated_errors():
        pin = setup.pin_session(pooler=pooler)
        await conn.execute(pin.statement.text, pin.params)
        if not conn.autocommit:
            await conn.commit()


def connect(dsn: str, *, autocommit: bool = True, pooler: bool = False) -> psycopg.Connection[Any]:
    """A connection to ``dsn``, by default in autocommit mode, with the settings
    this package depends on (:func:`pin_session`).

    Raises:
        ConfigurationError: ``dsn`` cannot be parsed (see :func:`dsn_params`).
        DatabaseUnavailableError: the server cannot be reached in time, or refused
            the connection (wrong password, no such database): the server's reason.
    """
    try:
        conn = psycopg.connect(dsn, autocommit=autocommit, **connect_options(dsn, pooler=pooler))
    except psycopg.OperationalError as exc:
        raise unavailable(dsn, exc) from exc
    try:
        pin_session(conn, pooler=pooler)
    except BaseException:
        conn.close()
        raise
    return conn


async def connect_async(dsn: str, *, pooler: bool = False) -> psycopg.AsyncConnection[Any]:
    """:func:`connect`'s asyncio twin."""
    try:
        conn = await psycopg.AsyncConnection.connect(
            dsn, autocommit=True, **connect_options(dsn, pooler=pooler)
        )
    except psycopg.OperationalError as exc:
        raise unavailable(dsn, exc) from exc
    try:
        await pin_session_async(conn, pooler=pooler)
    except BaseException:
        await conn.close()
        raise
    return conn


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
