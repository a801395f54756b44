"""``AsyncTaskQueueClient``: the client for asyncio apps (FastAPI, Starlette, aiohttp).

Every method is a coroutine; none blocks the event loop. It offers
``TaskQueueClient``'s methods, with the same arguments, results and errors
(a test holds the two to that). The client never migrates: ``TaskQueue``
(which migrates on start) or ``omnispindle migrate`` installs the schema.

Example:
    >>> async with AsyncTaskQueueClient() as client:          # doctest: +SKIP
    ...     task_id = await client.submit_task("email", {"to": "a@example.com"})
    ...     task = await client.wait_for_task(task_id, timeout=30)
"""

from __future__ import annotations

import asyncio
import os
import weakref
from collections.abc import AsyncIterator, Callable, Iterable
from datetime import datetime, timedelta
from typing import Any, NamedTuple, TypeVar
from uuid import UUID

from typing_extensions import Self

from omnispindle._client import async_streaming, async_waiting, operations
from omnispindle._client.dropped import close_dropped
from omnispindle._client.records import CancelOutcome, RetryOutcome, StreamEvent, raise_if_failed
from omnispindle._client.resubmission import submit_once_async
from omnispindle._core import batches, defaults, validation
from omnispindle._core.schedules import schedule
from omnispindle._core.specs import DEFAULT, TaskOptions, TaskSpec, task_spec
from omnispindle._db.async_notifier import AsyncNotifier
from omnispindle._db.async_pool import AsyncDatabase
from omnispindle._db.caller import AsyncCallerConnection
from omnispindle._db.embedded import DSN_VARIABLE
from omnispindle._db.namespace import Namespace
from omnispindle._db.query import Operation, Query
from omnispindle._db.replica import AsyncReplica
from omnispindle._db.rows import (
    PausedTaskType,
    SavedSchedule,
    ScheduleSummary,
    TaskRecord,
    TaskTypeLimit,
    TaskTypeStrategy,
    TypeDemand,
)
from omnispindle._observe import tracing
from omnispindle.errors import ConfigurationError
from omnispindle.task_queue import (
    TaskQueue,
    given_queue,
    listening_dsn,
    refuse_queue_settings,
)

__all__ = ["AsyncTaskQueueClient"]

T = TypeVar("T")


class AsyncTaskQueueClient:
    """Submits tasks and waits for them from coroutines; one per event loop.

    Open it with ``async with`` (or ``await client.open()`` and later
    ``await client.close()``), e.g. in a FastAPI lifespan.

    Args:
        local_queue: a [TaskQueue][omnispindle.task_queue.TaskQueue] in this
            process whose database to use (also an embedded one), with its
            pooler setting, LISTEN DSN and replica (``read_dsn``), or
        dsn: the database; default ``$OMNISPINDLE_DSN``.
        poll_interval: longest pause, in seconds, between checks while waiting
            when no notification arrives.
        pool_size: most connections the client's pool opens (default 10).
        schema: the queue's schema, as for ``TaskQueue`` (with ``local_queue``,
            that queue's).
        pooler: the DSN leads to a pooler in transaction mode: no statement is
            prepared, and LISTEN goes to ``listen_dsn``, as for ``TaskQueue``
            (with ``local_queue``, that queue's).
        listen_dsn: a direct connection for LISTEN, behind a pooler; without
            one there, waits wake by their poll interval alone.
        read_dsn: a streaming replica for what only reads, as for ``TaskQueue``;
            its pool opens on first use.

    Raises:
        ConfigurationError: both ``dsn`` and ``local_queue`` given, or neither
            and ``$OMNISPINDLE_DSN`` unset; or ``schema``, ``pooler``,
            ``listen_dsn`` or ``read_dsn`` with ``local_queue``.
        ValidationError: a setting has the wrong type or range.
    """

    def __init__(
        self,
        local_queue: TaskQueue | None = None,
        dsn: str | None = None,
        *,
        poll_interval: float = defaults.POLL_INTERVAL,
        pool_size: int | None = None,
        schema: str | None = None,
        pooler: bool = False,
        listen_dsn: str | None = None,
        read_dsn: str | None = None,
    ) -> None:
        self.dsn = _resolve_dsn(local_queue, dsn)
        namespace = _resolve_namespace(local_queue, schema)
        links = _resolve_links(local_queue, self.dsn, pooler, listen_dsn, read_dsn)
        self.poll_interval = validation.positive_number("poll_interval", poll_interval)
        size = defaults.POOL_SIZE if pool_size is None else pool_size
        self.db = AsyncDatabase(
            self.dsn,
            max_size=validation.int_in_range("pool_size", size, defaults.POOL_SIZE_RANGE),
            namespace=namespace,
            pooler=links.pooler,
        )
        self.notifier = AsyncNotifier(links.listen_dsn, namespace=namespace)
        read_dsn = links.read_dsn  # reads go there, as the blocking client's do
        self.replica = None if read_dsn is None else AsyncReplica(read_dsn, self.db)
        self._if_dropped: weakref.finalize[Any, Any] | None = None

    async def open(self) -> Self:
        """Check the schema and open the pool; returns the client.

        A client let go open (never closed) warns with ResourceWarning and
        closes its connections on its event loop.

        Raises:
            SchemaMissingError: the database has no omnispindle schema.
        """
        await self.db.open()
        self.notifier.open()
        if self._if_dropped is None or not self._if_dropped.alive:
            # Its LISTEN task holds the notifier, not the client: without this
            # its connection stayed open until the loop ended.
            closers = [self.db.close, self.notifier.close]
            if self.replica is not None:
                closers.insert(0, self.replica.close)
            loop = asyncio.get_running_loop()
            self._if_dropped = weakref.finalize(self, close_dropped, loop, closers)
        return self

    async def close(self) -> None:
        """Close the pools and the LISTEN connection."""
        if self._if_dropped is not None:
            self._if_dropped.detach()
        if self.replica is not None:
            await self.replica.close()
        await self.db.close()
        # After the pools: the waits it wakes find the client closed.
        await self.notifier.close()

    async def __aenter__(self) -> Self:
        return await self.open()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def submit_task(
        self,
        task_type: str,
        parameters: dict[str, Any] | None = None,
        priority: int = DEFAULT,
        dependencies: Iterable[int] | None = None,
        max_retries: int = DEFAULT,
        timeout: float | None = DEFAULT,
        *,
        retry_backoff: float = DEFAULT,
        required_capabilities: Iterable[str] | None = DEFAULT,
        allow_failed_dependencies: bool = False,
        run_at: datetime | None = None,
        delay: float | timedelta | None = None,
        idempotency_key: str | None = None,
        group_key: str | None = None,
        connection: AsyncCallerConnection | None = None,
    ) -> int:
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
        options = TaskOptions(
            priority,
            dependencies,
            max_retries,
            timeout,
            retry_backoff,
            required_capabilities,
            allow_failed_dependencies,
            run_at,
            delay,
            idempotency_key,
            group_key,
        )
        return (await self._insert([task_spec(task_type, parameters, options)], connection))[0]

    async def submit_batch(
        self, tasks: Iterable[dict[str, Any]], *, connection: AsyncCallerConnection | None = None
    ) -> list[int]:
        """Submit many tasks in one round trip and transaction, all or nothing; returns
        ids in order.

        Entries are as for ``TaskQueueClient.submit_batch`` (keys and ``entry(i)``
        for dependencies between them).

        Raises:
            ValidationError: an entry is invalid (its index is named); nothing is inserted.
            DependencyCycleError: entries depend on each other in a cycle.
        """
        entries = batches.batch_entries(tasks)
        if batches.plain_chunks(entries) is not None:
            with tracing.submit_span(batches.task_types(entries)) as trace_context:

                def chunked(key: UUID | None) -> Operation[list[int]]:
                    chunks = batches.plain_chunks(entries)  # afresh for each try
                    assert chunks is not None
                    return operations.submit_chunks(chunks, trace_context, key)

                return await self._submit(chunked, connection)
        specs = batches.batch_specs(entries)
        return await self._insert(specs, connection) if specs else []

    async def get_task(self, task_id: int) -> TaskRecord:
        """Return a task's current record.

        Raises:
            TaskNotFoundError: no task has this id.
        """
        return await self._read(operations.get_task(task_id))

    async def wait_for_task(
        self, task_id: int, timeout: float | None = None, *, raise_on_error: bool = False
    ) -> TaskRecord:
        """Wait until the task finishes; return its record (``result`` holds the executor's return).

        Raises:
            TaskNotFoundError: no task has this id.
            WaitTimeoutError: the task had not finished within ``timeout`` seconds.
            TaskFailedError: with ``raise_on_error``, it failed or was cancelled.
        """
        task = (await self.wait_for_batch([task_id], timeout))[0]
        return raise_if_failed(task) if raise_on_error else task

    async def wait_for_batch(
        self,
        task_ids: Iterable[int],
        timeout: float | None = None,
        *,
        progress: async_waiting.AsyncProgress | None = None,
    ) -> list[TaskRecord]:
        """Wait until every task finishes; return their records in the given order.

        It holds the ids and the finished records only, and however many
        tasks finish at once it checks at a bounded pace, fetching each
        record once.

        Args:
            progress: called as ``progress(finished, total)`` whenever more
                tasks have finished; it may be a coroutine function.

        Raises:
            TaskNotFoundError: an id does not exist, or its task is deleted
                (pruned) while waited for.
            WaitTimeoutError: some tasks had not finished within ``timeout``.
        """
        return await async_waiting.wait_for_batch(
            self.db,
            self.notifier,
            task_ids,
            timeout,
            self.poll_interval,
            progress,
            reads=self.replica,
        )

    async def cancel_task(self, task_id: int, reason: str | None = None) -> CancelOutcome:
        """Cancel a task and its dependents, as ``TaskQueueClient.cancel_task``.

        Returns:
            ``{"task_id", "state", "cancelled", "message"}``.

        Raises:
            TaskNotFoundError: no task has this id.
        """
        return await self.db.run(operations.cancel_task(task_id, reason))

    async def retry_task(self, task_id: int, *, with_dependents: bool = False) -> RetryOutcome:
        """Run a failed task again, as ``TaskQueueClient.retry_task``.

        Returns:
            ``{"task_id", "state", "dependents", "message"}``.

        Raises:
            TaskNotFoundError: no task has this id.
            TaskStateError: the task is not failed, or its key (or, with
                ``with_dependents``, that of a dependent it would bring back) is
                held; nothing changed.
        """
        return (await self.db.run(operations.retry_tasks([task_id], with_dependents)))[0]

    def stream_task(self, task_id: int, timeout: float | None = None) -> AsyncIterator[StreamEvent]:
        """Iterate (``async for``) over a task's partial results, then its final record.

        Events are those of ``TaskQueueClient.stream_task``. Bad arguments
        raise here; an unknown id raises at the first iteration.

        Raises:
            TaskNotFoundError: no task has this id.
            WaitTimeoutError: the task had not finished within ``timeout`` seconds.
        """
        task_id = validation.task_id(task_id)
        timeout = validation.optional_positive_number("timeout", timeout)
        return async_streaming.stream_events(
            self.db, self.notifier, task_id, timeout, self.poll_interval
        )

    async def add_periodic_task(
        self,
        name: str,
        cron: str,
        task_type: str,
        parameters: dict[str, Any] | None = None,
        *,
        priority: int = DEFAULT,
        max_retries: int = DEFAULT,
        timeout: float | None = DEFAULT,
        retry_backoff: float = DEFAULT,
        required_capabilities: Iterable[str] | None = DEFAULT,
        enabled: bool = True,
        tz: str = "UTC",
    ) -> SavedSchedule:
        """Create or replace the schedule ``name``, as ``TaskQueueClient.add_periodic_task``.

        Raises:
            CronExpressionError: the cron expression is invalid or never fires.
            ValidationError: another argument is invalid; nothing is saved.
        """
        options = TaskOptions(
            priority=priority,
            max_retries=max_retries,
            timeout=timeout,
            retry_backoff=retry_backoff,
            required_capabilities=required_capabilities,
        )
        checked = schedule(name, cron, task_type, parameters, options, enabled, tz)
        return await self.db.run(operations.save_schedule(checked))

    async def pause_task_type(self, task_type: str, reason: str | None = None) -> bool:
        """Pause ``task_type``: no worker claims its tasks until it is resumed.

        Tasks of the type that are already running finish as usual, and
        submitting it still works: the new tasks wait. Once this returns, no
        claim that starts afterwards takes a task of the type. Pausing a paused
        type changes nothing (its first reason and time stay).

        Returns:
            True if the type was not paused before.

        Raises:
            ValidationError: ``task_type`` or ``reason`` is invalid; nothing changed.
        """
        return await self.db.run(operations.pause_task_type(task_type, reason))

    async def resume_task_type(self, task_type: str) -> bool:
        """Resume ``task_type``: its ready tasks are claimable at once, and idle
        workers are woken.

        Returns:
            True if the type was paused; False (not an error) if it was not.

        Raises:
            ValidationError: ``task_type`` is invalid; nothing changed.
        """
        return await self.db.run(operations.resume_task_type(task_type))

    async def paused_task_types(self) -> list[PausedTaskType]:
        """Every paused task type, by name: ``{"task_type", "paused_at", "reason"}``."""
        return await self._read(operations.paused_task_types())

    async def set_task_type_limit(
        self,
        task_type: str,
        *,
        max_running: int | None = None,
        starts_per_second: float | None = None,
        burst: int | None = None,
        max_running_per_group: int | None = None,
        starts_per_second_per_group: float | None = None,
    ) -> None:
        """Limit ``task_type`` across every worker: at most ``max_running`` of its
        tasks running at once, at most ``starts_per_second`` of them started per
        second (a token bucket holding up to ``burst`` starts, by default one
        second's worth), and in each group (``group_key``; the tasks without one
        are one group) at most ``max_running_per_group`` running and
        ``starts_per_second_per_group`` started per second (a bucket of one
        second's starts per group). Leave a limit out with None; setting again
        replaces them all. A limit per group needs the type's fair strategy (see
        ``set_task_type_strategy``).

        The database enforces the limits inside each claim, under a lock on the
        type's row, so no two workers count the same room. A task held back by a
        limit stays pending and loses no attempt. Idle workers are woken, since a
        raised limit may free tasks.

        Raises:
            ValidationError: a bad task type or limit, no limit at all, or a
                ``burst`` without a rate, or a limit per group on a type without
                the fair strategy; nothing changed.
        """
        change = operations.set_task_type_limit(
            task_type,
            max_running,
            starts_per_second,
            burst,
            max_running_per_group,
            starts_per_second_per_group,
        )
        await self.db.run(change)

    async def clear_task_type_limit(self, task_type: str) -> bool:
        """Remove the limits of ``task_type``; idle workers are woken.

        Returns:
            True if it had limits; False (not an error) if it had none.

        Raises:
            ValidationError: ``task_type`` is invalid; nothing changed.
        """
        return await self.db.run(operations.clear_task_type_limit(task_type))

    async def task_type_limits(self) -> list[TaskTypeLimit]:
        """Every limited task type, by name: its limits, its running and ready tasks,
        the tokens its bucket holds now and how many ready tasks a limit holds back."""
        return await self._read(operations.task_type_limits())

    async def set_task_type_strategy(
        self, task_type: str, strategy: str, *, aging_seconds: float | None = None
    ) -> None:
        """Choose how workers order the ready tasks of ``task_type``: ``"priority"``,
        ``"aging"`` or ``"fair"``, as ``TaskQueueClient.set_task_type_strategy``.

        Raises:
            ValidationError: a bad task type, an unknown strategy, or
                ``aging_seconds`` missing for aging, given for another strategy, or
                not a number above 0; nothing changed.
        """
        change = operations.set_task_type_strategy(task_type, strategy, aging_seconds)
        await self.db.run(change)

    async def task_type_strategies(self) -> list[TaskTypeStrategy]:
        """Every task type with a strategy other than strict priority, by name:
        ``{"task_type", "strategy", "aging_seconds", "set_at"}``."""
        return await self._read(operations.task_type_strategies())

    async def workers_needed(
        self,
        concurrency: int,
        *,
        min_workers: int = 0,
        max_workers: int = 100,
        task_types: list[str] | None = None,
    ) -> int:
        """The worker processes a deployment should run now: the tasks that could
        run at once (running and ready ones, each type within its running limit, a
        paused type's running ones only) divided by ``concurrency``, each process's,
        rounded up, between ``min_workers`` and ``max_workers``. ``task_types``
        counts only the types the deployment runs. The SQL function
        ``omnispindle.workers_needed`` is the same, for an autoscaler's query.

        Raises:
            ValidationError: a bad concurrency or task type, or bounds out of order.
        """
        query = operations.workers_needed(concurrency, min_workers, max_workers, task_types)
        return await self._read(query)

    async def worker_demand(self) -> list[TypeDemand]:
        """Each task type with unfinished tasks: its running and ready tasks, whether it
        is paused, its running limit, and ``demand``, how many could run at once now."""
        return await self._read(operations.worker_demand())

    async def remove_periodic_task(self, name: str) -> bool:
        """Delete the schedule ``name``; False if there was none. Enqueued tasks stay."""
        return await self.db.run(operations.remove_schedule(name))

    async def list_periodic_tasks(self) -> list[ScheduleSummary]:
        """Every schedule, with its latest tick and the task that tick enqueued."""
        return await self._read(operations.list_schedules())

    async def _read(self, query: Query[T]) -> T:
        """A query that only reads, on the replica when there is one: as ``TaskQueue.read``."""
        return await (self.replica or self.db).read(query)

    async def _insert(
        self, specs: list[TaskSpec], connection: AsyncCallerConnection | None
    ) -> list[int]:
        with tracing.submit_span([s.task_type for s in specs]) as trace_context:
            return await self._submit(
                lambda key: operations.submit(specs, trace_context, key), connection
            )

    async def _submit(
        self,
        build: Callable[[UUID | None], Operation[list[int]]],
        connection: AsyncCallerConnection | None,
    ) -> list[int]:
        """Run a submission as the blocking client's ``_submit`` does."""
        if connection is not None:
            return await self.db.run(build(None), connection=connection)
        return await submit_once_async(self.db, build)


def _resolve_namespace(local_queue: TaskQueue | None, schema: str | None) -> Namespace:
    if local_queue is None:
        return Namespace.chosen(schema)
    refuse_queue_settings(schema=schema)  # the async client's pool is its own: pool_size may come
    return local_queue.namespace


class _Links(NamedTuple):
    """Where the client's connections go besides its DSN, and whether through a pooler."""

    pooler: bool
    listen_dsn: str | None
    read_dsn: str | None


def _resolve_links(
    local_queue: TaskQueue | None,
    dsn: str,
    pooler: bool,
    listen_dsn: str | None,
    read_dsn: str | None,
) -> _Links:
    """The links given, or those a queue lends (its pooler setting, LISTEN DSN
    and replica), as a TaskQueue resolves them."""
    if local_queue is None:
        return _Links(pooler, listening_dsn(dsn, pooler, listen_dsn), read_dsn)
    refuse_queue_settings(pooler=pooler or None, listen_dsn=listen_dsn, read_dsn=read_dsn)
    return _Links(local_queue.pooler, local_queue.listen_dsn, local_queue.read_dsn)


def _resolve_dsn(local_queue: TaskQueue | None, dsn: str | None) -> str:
    queue = given_queue(local_queue, dsn)
    if queue is not None:
        return queue.dsn
    dsn = dsn or os.environ.get(DSN_VARIABLE)
    if not dsn:
        raise ConfigurationError(
            f"no database: pass dsn=, set ${DSN_VARIABLE}, or pass local_queue= "
            "a TaskQueue (which can start the embedded server)"
        )
    return dsn
