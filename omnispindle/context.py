"""What a running executor can learn and do, without changing its signature."""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from omnispindle.errors import TaskCancelled


@dataclass(frozen=True)
class TaskContext:
    """The task the current executor call is running.

    ``cancelled`` turns true when someone cancels the task, or when the worker
    gives up on this attempt (its timeout passed, its lease was lost, or a
    stopping worker handed the task back); ``emit(data)`` appends a partial
    result that clients can stream.
    """

    task_id: int
    task_type: str
    attempt: int
    max_attempts: int
    _emit: Callable[[Any], int] | None = field(default=None, repr=False)
    # Made on first use: most tasks are never cancelled nor wait for it, and
    # an Event per task was a noticeable share of a short task's cost.
    _cancel: threading.Event | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def cancelled(self) -> bool:
        """True once this attempt has been asked to stop (a cancel, or the worker gave up on it)."""
        return self._cancel is not None and self._cancel.is_set()

    def raise_if_cancelled(self) -> None:
        """Raise [TaskCancelled][omnispindle.errors.TaskCancelled] if the task has been
        asked to stop."""
        if self.cancelled:
            raise TaskCancelled(f"task {self.task_id} was cancelled")

    def wait_cancelled(self, timeout: float | None = None) -> bool:
        """Sleep up to ``timeout`` seconds, waking early on cancellation; returns ``cancelled``."""
        return self._cancel_event().wait(timeout)

    def request_cancel(self) -> None:
        """Mark the task cancelled (the worker calls this when a cancel arrives)."""
        self._cancel_event().set()

    def _cancel_event(self) -> threading.Event:
        event = self._cancel
        if event is None:
            with _CANCEL_EVENTS_LOCK:  # the worker and the executor may both get here first
                event = self._cancel
                if event is None:
                    event = threading.Event()
                    object.__setattr__(self, "_cancel", event)
        return event

    def emit(self, data: Any) -> int:
        """Store a partial result (any JSON value); returns its sequence number from 1.

        Raises:
            ValidationError: ``data`` is not JSON that Postgres can store.
            LeaseLostError: this attempt no longer owns the task.
        """
        if self._emit is None:
            raise RuntimeError("emit() works only inside an executor run by a worker")
        return self._emit(data)


_CANCEL_EVENTS_LOCK = threading.Lock()

_current: ContextVar[TaskContext | None] = ContextVar("omnispindle_current_task", default=None)


def current_task() -> TaskContext | None:
    """Return the task being executed by this thread or coroutine, or None outside one.

    Example:
        >>> def executor(task_data):
        ...     ctx = current_task()
        ...     for step in range(10):
        ...         ctx.raise_if_cancelled()
        ...         ctx.emit({"step": step})
        ...     return {"attempt": ctx.attempt}
    """
    return _current.get()
