"""``TaskQueueClient``: submit tasks, look them up and wait for their results.

``WorkerClient`` lives in [omnispindle.worker][] and is re-exported here,
so ``from omnispindle.client import TaskQueueClient, WorkerClient`` works.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any, Callable, Iterable, Iterator

from . import tracing, validation
from .batches import batch_entries, batch_specs, plain_chunks
from .client_common import (FEW_LEFT, FinishedTasks, cancel_outcome, cancel_params,
                            raise_if_failed, require_found, task_record)
from .errors import TaskNotFoundError
from .notifier import FINISHED_CHANNEL
from .periodic import schedule_params
from .queue_handle import resolve_queue
from .streaming import stream_events
from .submission import bulk_params, chunked_ids, inserted_ids, insert_statement
from .waiting import CheckPacer, wait_until
from .worker import WorkerClient

__all__ = ["TaskQueueClient", "WorkerClient"]


class TaskQueueClient:
    """Submits tasks to a queue and waits for them.

    Args:
        local_queue: a [TaskQueue][omnispindle.task_queue.TaskQueue] in this process.
        dsn: or a database to connect to (the client then owns its queue handle).
        poll_interval: longest pause, in seconds, between checks while waiting
            when no notification arrives.

    Raises:
        ConfigurationError: both ``local_queue`` and ``dsn`` given.
    """

    def __init__(self, local_queue: Any = None, dsn: str | None = None, *,
                 poll_interval: float = 1.0) -> None:
        self.queue, self._owns_queue = resolve_queue(local_queue, dsn)
        self.poll_interval = validation.positive_number("poll_interval", poll_interval)

    def submit_task(self, task_type: str, parameters: dict | None = None, priority: int = 0,
                    dependencies: Iterable[int] | None = None, max_retries: int = 3,
                    timeout: float | None = None, *, retry_backoff: float = 1.0,
                    required_capabilities: Iterable[str] | None = None,
                    allow_failed_dependencies: bool = False, run_at: datetime | None = None,
                    delay: float | timedelta | None = None, idempotency_key: str | None = None,
                    connection: Any = None) -> int:
        """Submit one task and return its id.

        Args:
            task_type: which executor runs it.
            parameters: a JSON-serializable dict handed to the executor.
            priority: -1000 to 1000; higher runs first, FIFO within a priority.
            dependencies: ids of tasks that must succeed before this one runs.
            max_retries: 0 to 100 further attempts after a failed one.
            timeout: seconds one attempt may run (stored; enforced by workers).
            retry_backoff: base of the exponential backoff between attempts, seconds.
            required_capabilities: capabilities a worker must declare to run it.
            allow_failed_dependencies: run even when a dependency failed or was
                cancelled (for clean-up tasks); the executor then finds those in
                ``task_data["dependency_failures"]``.
            run_at: a timezone-aware datetime before which it does not run.
            delay: or seconds (or a timedelta) from now before it runs.
            idempotency_key: while a task with this key is unfinished, submitting
                another with the same key returns that task's id instead.
            connection: your psycopg connection or SQLAlchemy Session/Connection;
                the task then exists only if your transaction commits.

        Raises:
            ValidationError: a bad argument; nothing is inserted.
            UnknownDependencyError: a dependency id does not exist.
            DependencyStateError: a dependency already failed or was cancelled.

        Example:
            >>> client.submit_task("math", {"operation": "sum", "values": [1, 2]})  # doctest: +SKIP
            1
        """
        spec = validation.task_spec(task_type, parameters, priority, dependencies, max_retries,
                                    timeout, retry_backoff, required_capabilities,
                                    allow_failed_dependencies, run_at, delay, idempotency_key)
        return self._insert([spec], connection)[0]

    def submit_batch(self, tasks: Iterable[dict], *, connection: Any = None) -> list[int]:
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
        entries = batch_entries(tasks)
        chunks = plain_chunks(entries)
        if chunks is not None:
            return self._insert_chunks(entries, chunks, connection)
        specs = batch_specs(entries)
        return self._insert(specs, connection) if specs else []

    def get_task(self, task_id: int) -> dict[str, Any]:
        """Return a task's current record.

        Raises:
            TaskNotFoundError: no task has this id.
        """
        task_id = validation.task_id(task_id)
        rows = self.queue.db.fetch("get_tasks", {"ids": [task_id], "finished_only": False})
        if not rows:
            raise TaskNotFoundError(f"no task with id {task_id}")
        return task_record(rows[0])

    def wait_for_task(self, task_id: int, timeout: float | None = None, *,
                      raise_on_error: bool = False) -> dict[str, Any]:
        """Block until the task finishes; return its record (``result`` holds the executor's return).

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

    def wait_for_batch(self, task_ids: Iterable[int], timeout: float | None = None, *,
                       progress: Callable[[int, int], None] | None = None) -> list[dict[str, Any]]:
        """Block until every task finishes; return their records in the given order.

        It holds the ids and the finished records only, and however many
        tasks finish at once it checks at a bounded pace, fetching each
        record once.

        Args:
            progress: called as ``progress(finished, total)`` whenever more
                tasks have finished.

        Raises:
            TaskNotFoundError: an id does not exist.
            WaitTimeoutError: some tasks had not finished within ``timeout``.
        """
        finished = FinishedTasks(task_ids, timeout)
        fetch = self.queue.db.fetch
        if not finished.done:
            finished.require_found(fetch("missing_task_ids", finished.id_params()))
        pacer = CheckPacer(self.poll_interval, paced=finished.total > FEW_LEFT)

        def collect() -> bool:
            if finished.done:
                return True
            with pacer.timing():
                found = fetch(*finished.check())
            if finished.add(found) and progress is not None:
                progress(finished.count, finished.total)
            for params in finished.fetches(found):
                if finished.add(fetch("get_tasks", params)) and progress is not None:
                    progress(finished.count, finished.total)
            return finished.done

        deadline = None if timeout is None else time.monotonic() + timeout
        if not wait_until(collect, self.queue.notifier, FINISHED_CHANNEL, deadline, pacer):
            raise finished.timeout_error()
        return finished.records()

    def cancel_task(self, task_id: int, reason: str | None = None) -> dict[str, Any]:
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
        params = cancel_params(task_id, reason)
        row = self.queue.db.fetch("cancel_task", params)[0]
        return cancel_outcome(params["id"], row["state"], row["changed"])

    def retry_task(self, task_id: int) -> dict[str, Any]:
        """Run a failed task again: back to pending now, with one more attempt if none is left.

        Its error history stays; dependents that were cancelled because it
        failed stay cancelled.

        Returns:
            ``{"task_id", "state", "message"}``.

        Raises:
            TaskNotFoundError: no task has this id.
            TaskStateError: the task is not failed; nothing changed.
        """
        from .retrying import retry_tasks

        task_id = validation.task_id(task_id)
        with self.queue.db.pool.connection() as conn:
            return retry_tasks(conn, [task_id])[0]

    def stream_task(self, task_id: int, timeout: float | None = None) -> Iterator[dict[str, Any]]:
        """Yield a task's partial results in order, from the first, then its final record.

        Each partial is ``{"kind": "partial", "seq", "attempt", "data"}``; the
        last item is ``{"kind": "final", "task": <record as get_task>}``.
        Partials are stored, so a late subscriber still gets them all.

        Raises:
            TaskNotFoundError: no task has this id.
            WaitTimeoutError: the task had not finished within ``timeout`` seconds.
        """
        task_id = validation.task_id(task_id)
        if timeout is not None:
            validation.positive_number("timeout", timeout)
        self._existing_rows([task_id])
        return stream_events(self, task_id, timeout)

    def add_periodic_task(self, name: str, cron: str, task_type: str,
                          parameters: dict | None = None, *, priority: int = 0,
                          max_retries: int = 3, timeout: float | None = None,
                          retry_backoff: float = 1.0,
                          required_capabilities: Iterable[str] | None = None,
                          enabled: bool = True) -> dict[str, Any]:
        """Create or replace the schedule ``name``: a task submitted at every cron tick.

        ``cron`` has five fields (minute hour day month weekday) or six (a
        second field first), in UTC. Workers enqueue each tick once between
        them (a tick missed for up to a minute is enqueued late; after a
        longer gap only the latest runs); the task takes
        [submit_task][omnispindle.client.TaskQueueClient.submit_task]'s arguments.

        Raises:
            CronExpressionError: the cron expression is invalid or never fires.
            ValidationError: another argument is invalid; nothing is saved.
        """
        params = schedule_params(name, cron, task_type, parameters, priority=priority,
                                 max_retries=max_retries, timeout=timeout,
                                 retry_backoff=retry_backoff,
                                 required_capabilities=required_capabilities, enabled=enabled)
        return self.queue.db.fetch("upsert_periodic_task", params)[0]

    def remove_periodic_task(self, name: str) -> bool:
        """Delete the schedule ``name``; False if there was none. Enqueued tasks stay."""
        return bool(self.queue.db.fetch("delete_periodic_task", {"name": name}))

    def list_periodic_tasks(self) -> list[dict[str, Any]]:
        """Every schedule, with its latest tick and the task that tick enqueued."""
        return self.queue.db.fetch("list_periodic_tasks")

    def close(self) -> None:
        """Release the queue handle if this client created it."""
        if self._owns_queue:
            self.queue.shutdown()

    def _insert(self, specs: list[validation.TaskSpec], connection: Any) -> list[int]:
        with tracing.submit_span([s.task_type for s in specs]) as trace_context:
            statement, params = insert_statement(specs, trace_context)
            rows = self.queue.db.fetch(statement, params, connection=connection)
        return inserted_ids(statement, rows)

    def _insert_chunks(self, entries: list[dict], chunks: Iterator[list[validation.TaskSpec]],
                       connection: Any) -> list[int]:
        """A long batch in pipelined statements of one transaction: the server
        inserts a chunk while the next one is validated."""
        with tracing.submit_span([e.get("task_type") for e in entries]) as trace_context:
            results = self.queue.db.fetch_each(
                "insert_tasks_bulk", (bulk_params(specs, trace_context) for specs in chunks),
                connection=connection)
        return chunked_ids(results)

    def _existing_rows(self, ids: list[int]) -> list[dict[str, Any]]:
        """The tasks' current rows; raises TaskNotFoundError if one does not exist."""
        rows = self.queue.db.fetch("get_tasks", {"ids": ids, "finished_only": False})
        return require_found(ids, rows)
