"""A streaming replica's pool, blocking and asyncio, which hands a read to the
primary when the replica cannot answer it yet.

Two things a replica cannot answer: a task it has not replayed (a task just
submitted: ``TaskNotFoundError`` there), and a query that replay cancelled
because it conflicted with a change replayed under it (SQLSTATE 40001, or
40P01 for a buffer pin it held too long). Either is run again on the primary,
which has the answer. An unreachable replica is an outage like any other
(``DatabaseUnavailableError``): trying it first on every read would make each
read wait out the pool's timeout.
"""

from __future__ import annotations

import asyncio
from typing import TypeVar

import psycopg

from omnispindle._db.async_pool import AsyncDatabase
from omnispindle._db.caller import AsyncCallerConnection, CallerConnection
from omnispindle._db.in_flight import InFlight
from omnispindle._db.pool import Database
from omnispindle._db.query import Operation
from omnispindle.errors import ConfigurationError, TaskNotFoundError

T = TypeVar("T")
NOT_YET_HERE = (
    TaskNotFoundError,
    psycopg.errors.SerializationFailure,
    psycopg.errors.DeadlockDetected,
)


class Replica(Database):
    """The pool on ``dsn``, a replica of ``primary``, with the primary's settings.
    It opens without waiting for its first connection: a replica that cannot be
    reached fails the read that needs it, not whoever first asked for the pool."""

    def __init__(self, dsn: str, primary: Database, *, max_size: int, pooler: bool) -> None:
        super().__init__(
            dsn,
            max_size=max_size,
            namespace=primary.namespace,
            timeout=primary.timeout,
            pooler=pooler,
            name="omnispindle replica",
            wait=False,
        )
        self.primary = primary

    def run(
        self,
        operation: Operation[T],
        *,
        connection: CallerConnection | None = None,
        wait: float | None = None,
        in_flight: InFlight | None = None,
    ) -> T:
        """As ``Database.run``, on the primary when the replica cannot answer yet."""
        if connection is not None:
            raise ConfigurationError("a replica runs no operation on the caller's connection")
        try:
            return super().run(operation, wait=wait, in_flight=in_flight)
        except NOT_YET_HERE:
            return self.primary.run(operation, wait=wait, in_flight=in_flight)


class AsyncReplica(AsyncDatabase):
    """The asyncio twin of :class:`Replica`; its pool opens on first use."""

    def __init__(self, dsn: str, primary: AsyncDatabase) -> None:
        super().__init__(
            dsn,
            max_size=primary.max_size,
            namespace=primary.namespace,
            timeout=primary.timeout,
            pooler=primary.pooler,
        )
        self.primary = primary
        self._opening = asyncio.Lock()

    async def run(
        self,
        operation: Operation[T],
        *,
        connection: AsyncCallerConnection | None = None,
        wait: float | None = None,
    ) -> T:
        """As ``AsyncDatabase.run``, on the primary when the replica cannot answer yet."""
        if connection is not None:
            raise ConfigurationError("a replica runs no operation on the caller's connection")
        if self.pool is None:
            async with self._opening:  # one pool, however many first reads come at once
                await self.open()
        try:
            return await super().run(operation, wait=wait)
        except NOT_YET_HERE:
            return await self.primary.run(operation, wait=wait)
