"""What a running executor can learn and do, without changing its signature."""

from __future__ import annotations

import threading
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Callable

from .errors import TaskCancelled


@dataclass(frozen=True)
class TaskContext:
    """The task the current executor call is running.

    ``cancelled`` turns true when someone cancels the task; ``emit(data)``
    appends a partial result that clients can stream.
    """

    task_id: int
    task_type: str
    attempt: int
    max_attempts: int
    _cancel: threading.Event = field(default_factory=threading.Event, repr=False)
    _emit: Callable[[Any], int] | None = field(default=None, repr=False)

    @property
    def cancelled(self) -> bool:
        """True once the task has been asked to stop."""
        return self._cancel.is_set()

    def raise_if_cancelled(self) -> None:
        """Raise :class:`TaskCancelled` if the task has been asked to stop."""
        if self._cancel.is_set():
            raise TaskCancelled(f"task {self.task_id} was cancelled")

    def wait_cancelled(self, timeout: float | None = None) -> bool:
        """Sleep up to ``timeout`` seconds, waking early on cancellation; returns ``cancelled``."""
        return self._cancel.wait(timeout)

    def request_cancel(self) -> None:
        """Mark the task cancelled (the worker calls this when a cancel arrives)."""
        self._cancel.set()

    def emit(self, data: Any) -> int:
        """Store a partial result (any JSON value); returns its sequence number from 1.

        Raises:
            ValidationError: ``data`` is not JSON that Postgres can store.
            LeaseLostError: this attempt no longer owns the task.
        """
        if self._emit is None:
            raise RuntimeError("emit() works only inside an executor run by a worker")
        return self._emit(data)


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
