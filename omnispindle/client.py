"""``TaskQueueClient``: submit tasks, look them up and wait for their results.

``WorkerClient`` lives in [omnispindle.worker][]; it is handed on from here,
imported on first use, so that the seed's ``from omnispindle.client import
TaskQueueClient, WorkerClient`` works without a client importing the worker.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID

from typing_extensions import Self

from omnispindle._client import operations, streaming, waiting
from omnispindle._client.records import CancelOutcome, RetryOutcome, StreamEvent, raise_if_failed
from omnispindle._client.resubmission import submit_once
from omnispindle._core import batches, defaults, validation
from omnispindle._core.schedules import schedule
from omnispindle._core.specs import DEFAULT, TaskOptions, TaskSpec, task_spec
from omnispindle._db.caller import CallerConnection
from omnispindle._db.query import Operation
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
from omnispindle.task_queue import TaskQueue, open_queue

if TYPE_CHECKING:
    from omnispindle.worker import WorkerClient

__all__ = ["TaskQueueClient", "WorkerClient"]


def __getattr__(name: str) -> Any:
    if name == "WorkerClient":
        from omnispindle.worker import WorkerClient

        return WorkerClient
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class TaskQueueClient:
    """Submits tasks to a queue and waits for them.

    Args:
        local_queue: a [TaskQueue][omnispindle.task_queue.TaskQueue] in this process.
        dsn: or a database to connect to (the client then owns its queue).
        poll_interval: longest pause, in seconds, between checks while waiting
            when no notification arrives.
        pool_size: most connections of the client's own queue (with ``dsn``,
            or neither argument); a ``local_queue`` keeps its own pool.
        schema: the schema of the client's own queue, as for ``TaskQueue``.
        pooler: the DSN leads to a pooler in transaction mode (PgBouncer,
            Supavisor, RDS Proxy): no statement is prepared, and LISTEN goes to
            ``listen_dsn``, as for ``TaskQueue``.
        listen_dsn: a direct connection for LISTEN, behind a pooler; without
            one there, waits wake by their poll interval alone.
        read_dsn: a streaming replica for what only reads (``get_task``,
            waits' checks, inspection), as for ``TaskQueue``.

    The settings of the client's own queue (``pool_size`` to ``read_dsn``)
    are refused with a ``local_queue``, which has its own.

    Raises:
        ConfigurationError: both ``local_queue`` and ``dsn`` given, or a
            setting of the client's own queue with ``local_queue``.
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
        self.poll_interval = validation.positive_number("poll_interval", poll_interval)
        self.queue, self._owns_queue = open_queue(
            local_queue,
            dsn,
            pool_size,
            schema,
            pooler=pooler,
            listen_dsn=listen_dsn,
            read_dsn=read_dsn,
        )

    def submit_task(
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
        connection: CallerConnection | None = None,
    ) -> int:
        """Submit one task and return its id.

        Args:
            task_type: which executor runs it.
            parameters: a JSON-serializable dict handed to the executor.
            priority: -1000 to 1000; higher runs first, FIFO within a priority
                (default 0).
            dependencies: ids of tasks that must succeed before this one runs.
            max_retries: 0 to 100 further attempts after a failed one (default 3).
            timeout: seconds one attempt may run (stored; enforced by workers;
                default none).
            retry_backoff: base of the exponential backoff between attempts,
                seconds (default 1).
            required_capabilities: capabilities a worker must declare to run it.
            allow_failed_dependencies: run even when a dependency failed or was
                cancelled (for clean-up tasks); the executor then finds those in
                ``task_data["dependency_failures"]``.
            run_at: a timezone-aware datetime before which it does not run.
            delay: or seconds (or a timedelta) from now before it runs.
            idempotency_key: while a task with this key is unfinished, submitting
                another with the same key returns that task's id instead.
            group_key: its group (a tenant, a customer), 1 to 200 characters:
                workers share a type with the ``"fair"`` strategy evenly
                between its groups (see ``set_task_type_strategy``).
            connection: your psycopg connection or SQLAlchemy Session/Connection;
                the task then exists only if your transaction commits.

        A task type declared with [task][omnispindle.task] (or
        ``WorkerClient.task``) gives the defaults of the priority, retries,
        timeout, backoff and capabilities that a call leaves out.

        Raises:
            ValidationError: a bad argument; nothing is inserted.
            UnknownDependencyError: a dependency id does not exist.
            DependencyStateError: a dependency already failed or was cancelled.

        Example:
            >>> client.submit_task("math", {"operation": "sum", "values": [1, 2]})  # doctest: +SKIP
            1
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
        return self._insert([task_spec(task_type, parameters, options)], connection)[0]

    def submit_batch(
        self, tasks: Iterable[dict[str, Any]], *, connection: CallerConnection | None = None
    ) -> list[int]:
        """Submit many tasks in one round trip and transaction, all or nothing; returns
        ids in order.

        Each entry is a dict of
        [submit_task][omnispindle.client.TaskQueueClient.submit_task]'s
        arguments (``task_type`` required), plus an optional ``key``. Its
        ``dependencies`` may name existing task ids, the keys of other entries,
        and ``entry(i)`` for the entry at position ``i``.

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

                return self._submit(chunked, connection)
        specs = batches.batch_specs(entries)
        return self._insert(specs, connection) if specs else []

    def get_task(self, task_id: int) -> TaskRecord:
        """Return a task's current record.

        Raises:
            TaskNotFoundError: no task has this id.
        """
        return self.queue.read(operations.get_task(task_id))

    def wait_for_task(
        self, task_id: int, timeout: float | None = None, *, raise_on_error: bool = False
    ) -> TaskRecord:
        """Block until the task finishes; return its record (the executor's return in ``result``).

        Args:
            timeout: seconds to wait at most; None waits for ever.
            raise_on_error: raise [TaskFailedError][omnispindle.errors.TaskFailedError] if it
                failed or was cancelled.

        Raises:
            TaskNotFoundError: no task has this id.
            WaitTimeoutError: the task had not finished within ``timeout``.
        """
        task = self.wait_for_batch([task_id], timeout)[0]
        return raise_if_failed(task) if raise_on_error else task

    def wait_for_batch(
        self,
        task_ids: Iterable[int],
        timeout: float | None = None,
        *,
        progress: waiting.Progress | None = None,
    ) -> list[TaskRecord]:
        """Block until every task finishes; return their records in the given order.

        It holds the ids and the finished records only, and however many
        tasks finish at once it checks at a bounded pace, fetching each
        record once.

        Args:
            progress: called as ``progress(finished, total)`` whenever more
                tasks have finished.

        Raises:
            TaskNotFoundError: an id does not exist, or its task is deleted
                (pruned) while waited for.
            WaitTimeoutError: some tasks had not finished within ``timeout``.
        """
        return waiting.wait_for_batch(
            self.queue.db,
            self.queue.notifier,
            task_ids,
            timeout,
            self.poll_interval,
            progress,
            reads=self.queue.reads,
        )

    def cancel_task(self, task_id: int, reason: str | None = None) -> CancelOutcome:
        """Cancel a task and, through the database, every task that depends on it.

        A blocked or pending task ends ``cancelled`` at once. A running one is
        asked to stop: its executor sees ``current_task().cancelled``, and one
        that ignores it is abandoned at the worker's next heartbeat; whatever
        it returns is discarded. A finished task is left as it is.

        Returns:
            ``{"task_id", "state", "cancelled", "message"}``: ``cancelled`` is
            False when the task had already finished.

        Raises:
            TaskNotFoundError: no task has this id.
        """
        return self.queue.db.run(operations.cancel_task(task_id, reason))

    def retry_task(self, task_id: int, *, with_dependents: bool = False) -> RetryOutcome:
        """Run a failed task again: back to pending now, with one more attempt if none is left.

        Its error history stays. The dependents its failure cancelled stay
        cancelled, unless ``with_dependents``: then they (and theirs) wait for
        it again, except those that another failed or cancelled dependency
        keeps from ever running.

        Returns:
            ``{"task_id", "state", "dependents", "message"}``: ``dependents``
            lists the ids that wait for it again.

        Raises:
            TaskNotFoundError: no task has this id.
            TaskStateError: the task is not failed, or another unfinished task
                holds its idempotency key (or, with ``with_dependents``, that of
                a dependent it would bring back); nothing changed.
        """
        return self.queue.db.run(operations.retry_tasks([task_id], with_dependents))[0]

    def stream_task(self, task_id: int, timeout: float | None = None) -> Iterator[StreamEvent]:
        """Yield a task's partial results in order, from the first, then its final record.

        Each partial is ``{"kind": "partial", "seq", "attempt", "data"}``; the
        last item is ``{"kind": "final", "task": <record as get_task>}``.
        Partials are stored, so a late subscriber still gets them all.

        Raises:
            TaskNotFoundError: no task has this id (raised here, before iterating;
                at the first iteration if the database is away at the call).
            WaitTimeoutError: the task had not finished within ``timeout`` seconds.
            DatabaseUnavailableError: the database was still unreachable at the timeout.
        """
        timeout = validation.optional_positive_number("timeout", timeout)
        streaming.require_task(self.queue.reads, task_id, timeout)
        return streaming.stream_events(
            self.queue.db, self.queue.notifier, task_id, timeout, self.poll_interval
        )

    def add_periodic_task(
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
        """Create or replace the schedule ``name``: a task submitted at every cron tick.

        ``cron`` has five fields (minute hour day month weekday) or six (a
        second field first), read as wall-clock times in ``tz`` (an IANA
        name such as ``"Europe/Berlin"``; UTC by default). Where daylight
        saving time skips an hour, a time in the gap fires at its end; where
        it repeats one, a fixed time fires once. Workers enqueue each tick
        once between them (a tick missed for up to a minute is enqueued late;
        after a longer gap only the latest runs); the task takes
        [submit_task][omnispindle.client.TaskQueueClient.submit_task]'s arguments.

        Raises:
            CronExpressionError: the cron expression is invalid or never fires,
                or ``tz`` is not a known time zone.
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
        return self.queue.db.run(operations.save_schedule(checked))

    def pause_task_type(self, task_type: str, reason: str | None = None) -> bool:
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
        return self.queue.db.run(operations.pause_task_type(task_type, reason))

    def resume_task_type(self, task_type: str) -> bool:
        """Resume ``task_type``: its ready tasks are claimable at once, and idle
        workers are woken.

        Returns:
            True if the type was paused; False (not an error) if it was not.

        Raises:
            ValidationError: ``task_type`` is invalid; nothing changed.
        """
        return self.queue.db.run(operations.resume_task_type(task_type))

    def paused_task_types(self) -> list[PausedTaskType]:
        """Every paused task type, by name: ``{"task_type", "paused_at", "reason"}``."""
        return self.queue.read(operations.paused_task_types())

    def set_task_type_limit(
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
        self.queue.db.run(change)

    def clear_task_type_limit(self, task_type: str) -> bool:
        """Remove the limits of ``task_type``; idle workers are woken.

        Returns:
            True if it had limits; False (not an error) if it had none.

        Raises:
            ValidationError: ``task_type`` is invalid; nothing changed.
        """
        return self.queue.db.run(operations.clear_task_type_limit(task_type))

    def task_type_limits(self) -> list[TaskTypeLimit]:
        """Every limited task type, by name: its limits, its running and ready tasks,
        the tokens its bucket holds now and how many ready tasks a limit holds back."""
        return self.queue.read(operations.task_type_limits())

    def set_task_type_strategy(
        self, task_type: str, strategy: str, *, aging_seconds: float | None = None
    ) -> None:
        """Choose how workers order the ready tasks of ``task_type``: ``"priority"``
        (the default: strict priority, then age) or ``"aging"``, where a task's
        effective priority grows by one for every ``aging_seconds`` it has been
        ready, so that a flood of higher priorities cannot keep it waiting for
        ever. A task at priority p behind a flood at priority P starts after
        about (P - p) * ``aging_seconds``. Or ``"fair"``: fair share between
        the groups of the type's tasks (their ``group_key``; the tasks without
        one are a group too): a claim serves the group with the fewest running
        tasks first, ties in turn, so one group's flood cannot starve the
        others; within a group, strict priority then age. A strategy orders
        the type's own tasks: the type is claimed in a pass of its own, before
        the other types, as a limited type is. Idle workers are woken.

        Raises:
            ValidationError: a bad task type, an unknown strategy, or
                ``aging_seconds`` missing for aging, given for another strategy, or
                not a number above 0; nothing changed.
        """
        change = operations.set_task_type_strategy(task_type, strategy, aging_seconds)
        self.queue.db.run(change)

    def task_type_strategies(self) -> list[TaskTypeStrategy]:
        """Every task type with a strategy other than strict priority, by name:
        ``{"task_type", "strategy", "aging_seconds", "set_at"}``."""
        return self.queue.read(operations.task_type_strategies())

    def workers_needed(
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
        return self.queue.read(query)

    def worker_demand(self) -> list[TypeDemand]:
        """Each task type with unfinished tasks: its running and ready tasks, whether it
        is paused, its running limit, and ``demand``, how many could run at once now."""
        return self.queue.read(operations.worker_demand())

    def remove_periodic_task(self, name: str) -> bool:
        """Delete the schedule ``name``; False if there was none. Enqueued tasks stay."""
        return self.queue.db.run(operations.remove_schedule(name))

    def list_periodic_tasks(self) -> list[ScheduleSummary]:
        """Every schedule, with its latest tick and the task that tick enqueued."""
        return self.queue.read(operations.list_schedules())

    def close(self) -> None:
        """Release the queue if this client opened it."""
        if self._owns_queue:
            self.queue.shutdown()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _insert(self, specs: list[TaskSpec], connection: CallerConnection | None) -> list[int]:
        with tracing.submit_span([s.task_type for s in specs]) as trace_context:
            return self._submit(
                lambda key: operations.submit(specs, trace_context, key), connection
            )

    def _submit(
        self,
        build: Callable[[UUID | None], Operation[list[int]]],
        connection: CallerConnection | None,
    ) -> list[int]:
        """Run a submission: in the caller's transaction, which decides its outcome;
        else on its own, at most once across lost replies (see ``resubmission``)."""
        if connection is not None:
            return self.queue.db.run(build(None), connection=connection)
        return submit_once(self.queue.db, build)
