"""Declaring tasks with a decorator, beside ``register_task_executor``.

A declared task type has its executor and the defaults of its submissions in
one place: ``client.submit_task("resize", ...)`` in a process that has
imported the declaration takes its priority, retries, timeout, backoff and
capabilities for each of those the call leaves out, and ``omnispindle worker
--executors MODULE`` runs every task the module declares.

Example:
    >>> from omnispindle import task
    >>> @task("resize", timeout=30, max_retries=5)
    ... def resize(task_data):
    ...     return {"resized": True}
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from omnispindle._core.declared import REGISTRY, DeclaredTask
from omnispindle._core.specs import DEFAULT, TaskOptions, task_spec
from omnispindle.errors import ValidationError

__all__ = ["DeclaredTask", "declared_tasks", "task"]

F = TypeVar("F", bound=Callable[..., Any])


def task(
    task_type: str,
    *,
    priority: int | None = None,
    max_retries: int | None = None,
    timeout: float | None = None,
    retry_backoff: float | None = None,
    required_capabilities: Iterable[str] | None = None,
) -> Callable[[F], F]:
    """Declare the decorated function the executor of ``task_type``, with the defaults
    its submissions take (each as ``submit_task``'s argument of that name).

    The function is returned as it is.

    Raises:
        ValidationError: a default is out of range (when decorating).
        ConfigurationError: another function is declared for ``task_type``.
    """
    options = TaskOptions(
        priority=_given(priority),
        max_retries=_given(max_retries),
        timeout=_given(timeout),
        retry_backoff=_given(retry_backoff),
        required_capabilities=_given(required_capabilities),
    )
    checked = task_spec(task_type, None, options)  # refuses a bad default at once
    needs = None if required_capabilities is None else checked.required_capabilities

    def declare(fn: F) -> F:
        if not callable(fn):
            raise ValidationError(f"@task({task_type!r}) decorates a function, got {fn!r}")
        REGISTRY.declare(
            DeclaredTask(task_type, fn, priority, max_retries, timeout, retry_backoff, needs)
        )
        return fn

    return declare


def _given(value: Any) -> Any:
    """A default left undeclared is checked as the usual one."""
    return DEFAULT if value is None else value


def declared_tasks() -> list[DeclaredTask]:
    """Every task declared in this process, in the order declared."""
    return REGISTRY.all()
