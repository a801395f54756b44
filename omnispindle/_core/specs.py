"""A task as submitted (its options) and as validated (its spec).

Example:
    >>> task_spec("email", {"to": "ada@example.com"}, TaskOptions(priority=5)).priority
    5
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from omnispindle._core import defaults, validation


class TaskOptions(NamedTuple):
    """How a task is to run, as the caller gave it (``submit_task``'s keyword arguments).

    Each field is checked by :func:`task_spec`. A named tuple, not a dataclass: a
    batch makes one per entry.
    """

    priority: int = defaults.PRIORITY
    dependencies: Iterable[int] | None = None
    max_retries: int = defaults.MAX_RETRIES
    timeout: float | None = None
    retry_backoff: float = defaults.RETRY_BACKOFF
    required_capabilities: Iterable[str] | None = None
    allow_failed_dependencies: bool = False
    run_at: datetime | None = None
    delay: float | timedelta | None = None
    idempotency_key: str | None = None


# What a batch entry may hold: a task type, parameters, the options, and a key.
BATCH_FIELDS = frozenset({"task_type", "parameters", "key", *TaskOptions._fields})


class TaskSpec(NamedTuple):
    """One validated task, in the shape the insert statements take.

    A named tuple, not a frozen dataclass: a batch makes one per entry, and a
    frozen dataclass took several microseconds to build.
    """

    task_type: str
    parameters_json: str
    priority: int
    max_attempts: int
    retry_backoff: float
    timeout: float | None
    required_capabilities: tuple[str, ...]
    dependencies: tuple[int, ...]
    allow_failed_dependencies: bool = False
    entry_dependencies: tuple[int, ...] = ()  # positions of other entries of its batch
    run_after: datetime | None = None  # None: as soon as possible
    idempotency_key: str | None = None


DEFAULT_OPTIONS = TaskOptions()


def task_spec(
    task_type: Any, parameters: Any = None, options: TaskOptions = DEFAULT_OPTIONS
) -> TaskSpec:
    """Validate one task.

    Raises:
        ValidationError: naming the argument and what it must be.
    """
    return TaskSpec(
        task_type=validation.task_type(task_type),
        parameters_json=validation.parameters(parameters),
        priority=validation.int_in_range("priority", options.priority, defaults.PRIORITY_RANGE),
        max_attempts=defaults.max_attempts(
            validation.int_in_range("max_retries", options.max_retries, defaults.MAX_RETRIES_RANGE)
        ),
        retry_backoff=validation.retry_backoff(options.retry_backoff),
        timeout=validation.timeout(options.timeout),
        required_capabilities=validation.names(
            "required_capabilities", options.required_capabilities
        ),
        dependencies=validation.task_ids("dependencies", options.dependencies),
        allow_failed_dependencies=validation.flag(
            "allow_failed_dependencies", options.allow_failed_dependencies
        ),
        run_after=validation.run_after(options.run_at, options.delay),
        idempotency_key=validation.idempotency_key(options.idempotency_key),
    )


def options_of(fields: Mapping[str, Any]) -> TaskOptions:
    """The options among a batch entry's fields (its task type, parameters and key aside)."""
    return TaskOptions(
        **{
            name: value
            for name, value in fields.items()
            if name not in ("task_type", "parameters", "key")
        }
    )
