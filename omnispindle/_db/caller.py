"""The caller's own connection, joined: psycopg 3, or SQLAlchemy on the psycopg driver.

An operation run on it takes part in the caller's transaction, so a task
exists only if the caller commits.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Union

import psycopg

from omnispindle.errors import ConfigurationError

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection as SAConnection
    from sqlalchemy.ext.asyncio import AsyncConnection as SAAsyncConnection
    from sqlalchemy.ext.asyncio import AsyncSession
    from sqlalchemy.orm import Session

# What ``connection=`` takes in the blocking client, and in the asyncio one.
CallerConnection = Union[psycopg.Connection[Any], "Session", "SAConnection"]
AsyncCallerConnection = Union[psycopg.AsyncConnection[Any], "AsyncSession", "SAAsyncConnection"]


def as_psycopg(connection: CallerConnection) -> psycopg.Connection[Any]:
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


async def as_async_psycopg(connection: AsyncCallerConnection) -> psycopg.AsyncConnection[Any]:
    """Return the psycopg async connection behind a caller's connection object.

    Raises:
        ConfigurationError: it is neither a psycopg ``AsyncConnection`` nor a
            SQLAlchemy ``AsyncSession``/``AsyncConnection`` on psycopg.
    """
    if isinstance(connection, psycopg.AsyncConnection):
        return connection
    raw = await _sqlalchemy_async_driver_connection(connection)
    if isinstance(raw, psycopg.AsyncConnection):
        return raw
    raise ConfigurationError(
        "connection= takes a psycopg AsyncConnection, or a SQLAlchemy AsyncSession or "
        "AsyncConnection using the psycopg driver (postgresql+psycopg://); "
        f"got {type(connection).__name__}"
    )


def _sqlalchemy_driver_connection(connection: object) -> object:
    from sqlalchemy.engine import Connection
    from sqlalchemy.orm import Session

    if isinstance(connection, Session):
        connection = connection.connection()
    if isinstance(connection, Connection):
        if not connection.in_transaction():
            # Autobegin as SQLAlchemy's own execute would, so that the app's
            # commit() or rollback() covers this statement too.
            connection.begin()
        return connection.connection.driver_connection
    return None


async def _sqlalchemy_async_driver_connection(connection: object) -> object:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

    if isinstance(connection, AsyncSession):
        connection = await connection.connection()
    if isinstance(connection, AsyncConnection):
        if not connection.in_transaction():
            await connection.begin()  # as in the blocking twin
        raw = await connection.get_raw_connection()
        return raw.driver_connection
    return None
