"""``TaskQueueClient``: submit tasks, look them up and wait for their results.

``WorkerClient`` lives in :mod:`omnispindle.worker` and is re-exported here,
so the seed's ``from omnispindle.client import TaskQueueClient, WorkerClient``
works.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterable, Iterator

from psycopg.types.json import Jsonb

from . import validation
from .batches import batch_specs
from .errors import TaskFailedError, TaskNotFoundError, WaitTimeoutError
from .notifier import FINISHED_CHANNEL
from .queue_handle import resolve_queue
from .states import FINISHED_VALUES, TaskState
from .streaming import stream_events
from .waiting import wait_until
from .worker import WorkerClient

__all__ = ["TaskQueueClient", "WorkerClient"]


class TaskQueueClient:
    """Submits tasks to a queue and waits for them.

    Args:
        local_queue: a :class:`~omnispindle.task_queue.TaskQueue` in this process.
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
                    allow_failed_dependencies: bool = False,
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
                                    allow_failed_dependencies)
        return self._insert([spec], connection)[0]

    def submit_batch(self, tasks: Iterable[dict], *, connection: Any = None) -> list[int]:
        """Submit many tasks in one round trip, all or nothing; returns ids in order.

        Each entry is a dict of :meth:`submit_task`'s arguments (``task_type``
        required), plus an optional ``key``. Its ``dependencies`` may name
        existing task ids, the keys of other entries, and ``entry(i)`` for the
        entry at position ``i``.

        Raises:
            ValidationError: an entry is invalid (its index is named); nothing is inserted.
            DependencyCycleError: entries depend on each other in a cycle.
        """
        specs = batch_specs(tasks)
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
        return _task_record(rows[0])

    def wait_for_task(self, task_id: int, timeout: float | None = None, *,
                      raise_on_error: bool = False) -> dict[str, Any]:
        """Block until the task finishes; return its record (``result`` holds the executor's return).

        Args:
            timeout: seconds to wait at most; None waits for ever.
            raise_on_error: raise :class:`TaskFailedError` if it failed or was cancelled.

        Raises:
            TaskNotFoundError: no task has this id.
            WaitTimeoutError: the task had not finished within ``timeout``.
        """
        task = self.wait_for_batch([task_id], timeout)[0]
        if raise_on_error and task["state"] != TaskState.SUCCEEDED.value:
            raise TaskFailedError(task)
        return task

    def wait_for_batch(self, task_ids: Iterable[int], timeout: float | None = None, *,
                       progress: Callable[[int, int], None] | None = None) -> list[dict[str, Any]]:
        """Block until every task finishes; return their records in the given order.

        Args:
            progress: called as ``progress(finished, total)`` whenever more
                tasks have finished.

        Raises:
            TaskNotFoundError: an id does not exist.
            WaitTimeoutError: some tasks had not finished within ``timeout``.
        """
        ids = [validation.task_id(i) for i in task_ids]
        if timeout is not None:
            validation.positive_number("timeout", timeout)
        total = len(set(ids))
        finished = {row["task_id"]: _task_record(row) for row in self._existing_rows(ids)
                    if row["state"] in FINISHED_VALUES}
        if progress is not None and finished:
            progress(len(finished), total)

        def collect() -> bool:
            waiting = [i for i in dict.fromkeys(ids) if i not in finished]
            if not waiting:
                return True
            rows = self.queue.db.fetch("get_tasks", {"ids": waiting, "finished_only": True})
            for row in rows:
                finished[row["task_id"]] = _task_record(row)
            if progress is not None and rows:
                progress(len(finished), total)
            return len(finished) == total

        deadline = None if timeout is None else time.monotonic() + timeout
        if not wait_until(collect, self.queue.notifier, FINISHED_CHANNEL, deadline,
                          self.poll_interval):
            raise WaitTimeoutError(
                f"{total - len(finished)} of {total} task(s) "
                f"unfinished after {timeout} s")
        return [finished[i] for i in ids]

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
        task_id = validation.task_id(task_id)
        if reason is not None and not isinstance(reason, str):
            raise validation.ValidationError(f"reason must be a string, got {reason!r}")
        row = self.queue.db.fetch("cancel_task", {
            "id": task_id, "reason": reason or "cancelled by request"})[0]
        if not row["changed"]:
            message = f"task {task_id} already {row['state']}; nothing to cancel"
        elif row["state"] == TaskState.RUNNING.value:
            message = f"task {task_id} is running; its worker has been asked to stop it"
        else:
            message = f"task {task_id} cancelled"
        return {"task_id": task_id, "state": row["state"], "cancelled": row["changed"],
                "message": message}

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

    def close(self) -> None:
        """Release the queue handle if this client created it."""
        if self._owns_queue:
            self.queue.shutdown()

    def _insert(self, specs: list[validation.TaskSpec], connection: Any) -> list[int]:
        params = {
            "task_types": [s.task_type for s in specs],
            "parameters": [s.parameters_json for s in specs],
            "priorities": [s.priority for s in specs],
            "max_attempts": [s.max_attempts for s in specs],
            "retry_backoffs": [s.retry_backoff for s in specs],
            "timeouts": [s.timeout for s in specs],
            "required_capabilities": [Jsonb(list(s.required_capabilities)) for s in specs],
            "dependencies": [Jsonb(list(s.dependencies)) for s in specs],
            "entry_dependencies": [Jsonb([p + 1 for p in s.entry_dependencies]) for s in specs],
            "allow_failed": [s.allow_failed_dependencies for s in specs],
        }
        rows = self.queue.db.fetch("submit_tasks", params, connection=connection)
        return [row["id"] for row in rows]

    def _existing_rows(self, ids: list[int]) -> list[dict[str, Any]]:
        """The tasks' current rows; raises TaskNotFoundError if one does not exist."""
        rows = self.queue.db.fetch("get_tasks", {"ids": ids, "finished_only": False})
        found = {row["task_id"] for row in rows}
        missing = [i for i in ids if i not in found]
        if missing:
            raise TaskNotFoundError(f"no task with id {missing[0]}")
        return rows


def _task_record(row: dict[str, Any]) -> dict[str, Any]:
    record = dict(row)
    record["dependencies"] = list(row["dependencies"] or [])
    return record
