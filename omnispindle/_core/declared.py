"""Tasks declared with a decorator: the executor, and the defaults its submissions take.

One registry per process. A submission of a declared task type takes the
declared priority, retries, timeout, backoff and capabilities for each of
those it does not give itself; workers take the executors.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from omnispindle.errors import ConfigurationError


@dataclass(frozen=True)
class DeclaredTask:
    """A task type's executor and the defaults of its submissions (None: the usual)."""

    task_type: str
    fn: Callable[..., Any]
    priority: int | None = None
    max_retries: int | None = None
    timeout: float | None = None
    retry_backoff: float | None = None
    required_capabilities: tuple[str, ...] | None = None


class Registry:
    """The task types declared in this process."""

    def __init__(self) -> None:
        self._tasks: dict[str, DeclaredTask] = {}

    def declare(self, declared: DeclaredTask) -> None:
        """Add ``declared`` (again, when a module is imported twice).

        Raises:
            ConfigurationError: another function is declared for its task type.
        """
        known = self._tasks.get(declared.task_type)
        if known is not None and _name(known.fn) != _name(declared.fn):
            raise ConfigurationError(
                f"task type {declared.task_type!r} is declared twice: by {_name(known.fn)} "
                f"and by {_name(declared.fn)}"
            )
        self._tasks[declared.task_type] = declared

    def get(self, task_type: object) -> DeclaredTask | None:
        """The declaration of ``task_type``, if any."""
        return self._tasks.get(task_type) if self._tasks and isinstance(task_type, str) else None

    def all(self) -> list[DeclaredTask]:
        """Every declaration, in the order made."""
        return list(self._tasks.values())

    def forget(self, task_type: str) -> None:
        """Drop a declaration (for tests, and for code that declares on the fly)."""
        self._tasks.pop(task_type, None)


def _name(fn: Callable[..., Any]) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


REGISTRY = Registry()
