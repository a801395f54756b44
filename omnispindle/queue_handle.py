"""How clients and workers find their queue: in-process, by DSN, or by default."""

from __future__ import annotations

from typing import Any

from .errors import ConfigurationError


def resolve_queue(local_queue: Any, dsn: str | None) -> tuple[Any, bool]:
    """Return ``(queue, owned)``; ``owned`` is True when the caller must shut it down.

    Raises:
        ConfigurationError: both a queue and a DSN were given.
    """
    from .task_queue import TaskQueue

    given = given_queue(local_queue, dsn)
    if given is not None:
        return given, False
    return TaskQueue(dsn), True


def given_queue(local_queue: Any, dsn: str | None) -> Any:
    """The caller's own TaskQueue, checked, or None when it gave none.

    Raises:
        ConfigurationError: both a queue and a DSN were given, or the queue is no TaskQueue.
    """
    from .task_queue import TaskQueue

    if local_queue is not None and dsn is not None:
        raise ConfigurationError("give either local_queue or dsn, not both")
    if local_queue is not None and not isinstance(local_queue, TaskQueue):
        raise ConfigurationError(
            f"local_queue must be a TaskQueue, got {type(local_queue).__name__}")
    return local_queue
