"""What a running executor can learn about its task, without changing its signature."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(frozen=True)
class TaskContext:
    """The task the current executor call is running."""

    task_id: int
    task_type: str
    attempt: int
    max_attempts: int


_current: ContextVar[TaskContext | None] = ContextVar("omnispindle_current_task", default=None)


def current_task() -> TaskContext | None:
    """Return the task being executed by this thread or coroutine, or None outside one.

    Example:
        >>> def executor(task_data):
        ...     ctx = current_task()
        ...     return {"attempt": ctx.attempt}
    """
    return _current.get()
