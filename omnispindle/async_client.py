"""``AsyncTaskQueueClient``: the client for asyncio apps (FastAPI, Starlette, aiohttp).

Every method is a coroutine; none blocks the event loop. The client never
migrates: ``TaskQueue`` (which migrates on start) or ``omnispindle migrate``
installs the schema.

Example:
    >>> async with AsyncTaskQueueClient() as client:          # doctest: +SKIP
    ...     task_id = await client.submit_task("email", {"to": "a@example.com"})
    ...     task = await client.wait_for_task(task_id, timeout=30)
"""

from __future__ import annotations

import inspect
import os
import time
from datetime import datetime, timedelta
from typing import Any, AsyncIterator, Callable, Iterable, Iterator

from . import tracing, validation
from .async_connections import AsyncDatabase
from .async_notifier import AsyncNotifier
from .async_streaming import stream_events
from .async_waiting import wait_until
from .batches import batch_entries, batch_specs, plain_chunks
from .client_common import (FEW_LEFT, FinishedTasks, cancel_outcome, cancel_params,
                            raise_if_failed, task_record)
from .embedded import DSN_VARIABLE
from .errors import ConfigurationError, TaskNotFoundError
from .notifier import FINISHED_CHANNEL
from .queue_handle import given_queue
from .submission import bulk_params, chunked_ids, inserted_ids, insert_statement
from .waiting import CheckPacer

__all__ = ["AsyncTaskQueueClient"]


class AsyncTaskQueueClient:
    """Submits tasks and waits for them from coroutines; one per event loop.

    Open it with ``async with`` (or ``await client.open()`` and later
    ``await client.close()``), e.g. in a FastAPI lifespan.

    Args:
        dsn: the database; default ``$OMNISPINDLE_DSN``.
        local_queue: or a [TaskQueue][omnispindle.task_queue.TaskQueue] in this
            process whose database to use (also an embedded one).
        poll_interval: longest pause, in seconds, between checks while waiting
            when no notification arrives.
        pool_size: most connections the client's pool opens.

    Raises:
        ConfigurationError: both ``dsn`` and ``local_queue`` given, or neither
            and ``$OMNISPINDLE_DSN`` unset.
        ValidationError: a setting has the wrong type or range.
    """

    def __init__(self, dsn: str | None = None, *, local_queue: Any = None,
                 poll_interval: float = 1.0, pool_size: int = 10) -> None:
        self.dsn = _resolve_dsn(dsn, local_queue)
        self.poll_interval = validation.positive_number("poll_interval", poll_interval)
        self.db = AsyncDatabase(
            self.dsn, max_size=validation.int_in_range("pool_size", pool_size, (1, 1000)))
        self.notifier = AsyncNotifier(self.dsn)

    async def open(self) -> "AsyncTaskQueueClient":
        """Check the schema and open the pool; returns the client.

        Raises:
            SchemaMissingError: the database has no omnispindle schema.
        """
        await self.db.open()
        return self

    async def close(self) -> None:
        """Close the LISTEN connection and the pool."""
        await self.notifier.close()
        await self.db.close()

    async def __aenter__(self) -> "AsyncTaskQueueClient":
        return await self.open()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def submit_task(self, task_type: str, parameters: dict | None = None, priority: int = 0,
                          dependencies: Iterable[int] | None = None, max_retries: int = 3,
                          timeout: float | None = None, *, retry_backoff: float = 1.0,
                          required_capabilities: Iterable[str] | None = None,
                          allow_failed_dependencies: bool = False,
                          run_at: datetime | None = None,
                          delay: float | timedelta | None = None,
                          idempotency_key: str | None = None, connection: Any = None) -> int:
        """Submit one task and return its id; the arguments are ``TaskQueueClient.submit_task``'s.

        Args:
            connection: your psycopg ``AsyncConnection``, or SQLAlchemy
                ``AsyncSession``/``AsyncConnection`` (``postgresql+psycopg://``);
                the task then exists only if your transaction commits.

        Raises:
            ValidationError: a bad argument; nothing is inserted.
            UnknownDependencyError: a dependency id does not exist.
            DependencyStateError: a dependency already failed or was cancelled.
        """
        spec = validation.task_spec(task_type, parameters, priority, dependencies, max_retries,
                                    timeout, retry_backoff, required_capabilities,
                                    allow_failed_dependencies, run_at, delay, idempotency_key)
        return (await self._insert([spec], connection))[0]

    async def submit_batch(self, tasks: Iterable[dict], *, connection: Any = None) -> list[int]:
        """Submit many tasks in one round trip and transaction, all or nothing; returns
        ids in order.

        Entries are as for ``TaskQueueClient.submit_batch`` (keys and ``entry(i)``
        for dependencies between them).

        Raises:
            ValidationError: an entry is invalid (its index is named); nothing is inserted.
            DependencyCycleError: entries depend on each other in a cycle.
        """
        entries = batch_entries(tasks)
        chunks = plain_chunks(entries)
        if chunks is not None:
            return await self._insert_chunks(entries, chunks, connection)
        specs = batch_specs(entries)
        return await self._insert(specs, connection) if specs else []

    async def get_task(self, task_id: int) -> dict[str, Any]:
        """Return a task's current record.

        Raises:
            TaskNotFoundError: no task has this id.
        """
        task_id = validation.task_id(task_id)
        rows = await self.db.fetch("get_tasks", {"ids": [task_id], "finished_only": False})
        if not rows:
            raise TaskNotFoundError(f"no task with id {task_id}")
        return task_record(rows[0])

    async def wait_for_task(self, task_id: int, timeout: float | None = None, *,
                            raise_on_error: bool = False) -> dict[str, Any]:
        """Wait until the task finishes; return its record (``result`` holds the executor's return).

        Raises:
            TaskNotFoundError: no task has this id.
            WaitTimeoutError: the task had not finished within ``timeout`` seconds.
            TaskFailedError: with ``raise_on_error``, it failed or was cancelled.
        """
        task = (await self.wait_for_batch([task_id], timeout))[0]
        return raise_if_failed(task) if raise_on_error else task

    async def wait_for_batch(self, task_ids: Iterable[int], timeout: float | None = None, *,
                             progress: Callable[[int, int], Any] | None = None
                             ) -> list[dict[str, Any]]:
        """Wait until every task finishes; return their records in the given order.

        It holds the ids and the finished records only, and however many
        tasks finish at once it checks at a bounded pace, fetching each
        record once.

        Args:
            progress: called as ``progress(finished, total)`` whenever more
                tasks have finished; it may be a coroutine function.

        Raises:
            TaskNotFoundError: an id does not exist.
            WaitTimeoutError: some tasks had not finished within ``timeout``.
        """
        finished = FinishedTasks(task_ids, timeout)
        fetch = self.db.fetch
        if not finished.done:
            finished.require_found(await fetch("missing_task_ids", finished.id_params()))
        pacer = CheckPacer(self.poll_interval, paced=finished.total > FEW_LEFT)

        async def collect() -> bool:
            if finished.done:
                return True
            with pacer.timing():
                found = await fetch(*finished.check())
            if finished.add(found):
                await _report(progress, finished)
            for params in finished.fetches(found):
                if finished.add(await fetch("get_tasks", params)):
                    await _report(progress, finished)
            return finished.done

        deadline = None if timeout is None else time.monotonic() + timeout
        if not await wait_until(collect, self.notifier, (FINISHED_CHANNEL,), deadline, pacer):
            raise finished.timeout_error()
        return finished.records()

    async def cancel_task(self, task_id: int, reason: str | None = None) -> dict[str, Any]:
        """Cancel a task and its dependents, as ``TaskQueueClient.cancel_task``.

        Returns:
            ``{"task_id", "state", "cancelled", "message"}``.

        Raises:
            TaskNotFoundError: no task has this id.
        """
        params = cancel_params(task_id, reason)
        row = (await self.db.fetch("cancel_task", params))[0]
        return cancel_outcome(params["id"], row["state"], row["changed"])

    def stream_task(self, task_id: int, timeout: float | None = None
                    ) -> AsyncIterator[dict[str, Any]]:
        """Iterate (``async for``) over a task's partial results, then its final record.

        Events are those of ``TaskQueueClient.stream_task``. Bad arguments
        raise here; an unknown id raises at the first iteration.

        Raises:
            TaskNotFoundError: no task has this id.
            WaitTimeoutError: the task had not finished within ``timeout`` seconds.
        """
        task_id = validation.task_id(task_id)
        validation.positive_number("timeout", timeout, allow_none=True)
        return stream_events(self, task_id, timeout)

    async def _insert(self, specs: list[validation.TaskSpec], connection: Any) -> list[int]:
        with tracing.submit_span([s.task_type for s in specs]) as trace_context:
            statement, params = insert_statement(specs, trace_context)
            rows = await self.db.fetch(statement, params, connection=connection)
        return inserted_ids(statement, rows)

    async def _insert_chunks(self, entries: list[dict], chunks: Iterator[list[validation.TaskSpec]],
                             connection: Any) -> list[int]:
        """A long batch in pipelined statements of one transaction, as the sync client's."""
        with tracing.submit_span([e.get("task_type") for e in entries]) as trace_context:
            results = await self.db.fetch_each(
                "insert_tasks_bulk", (bulk_params(specs, trace_context) for specs in chunks),
                connection=connection)
        return chunked_ids(results)


async def _report(progress: Callable[[int, int], Any] | None, finished: FinishedTasks) -> None:
    if progress is not None:
        outcome = progress(finished.count, finished.total)
        if inspect.isawaitable(outcome):
            await outcome


def _resolve_dsn(dsn: str | None, local_queue: Any) -> str:
    queue = given_queue(local_queue, dsn)
    if queue is not None:
        return queue.dsn
    dsn = dsn or os.environ.get(DSN_VARIABLE)
    if not dsn:
        raise ConfigurationError(
            f"no database: pass dsn=, set ${DSN_VARIABLE}, or pass local_queue= "
            "a TaskQueue (which can start the embedded server)")
    return dsn
