"""A task as submitted (its options) and as validated (its spec).

Example:
    >>> task_spec("email", {"to": "ada@example.com"}, TaskOptions(priority=5)).priority
    5
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from omnispindle._core import defaults, limits
from omnispindle._core.declared import REGISTRY, DeclaredTask
from omnispindle._core.defaults import MAX_RETRIES_RANGE, PRIORITY_RANGE, max_attempts
from omnispindle._core.validation import flag as _flag
from omnispindle._core.validation import group_key as _group_key
from omnispindle._core.validation import idempotency_key as _idempotency_key
from omnispindle._core.validation import int_in_range as _int_in_range
from omnispindle._core.validation import names as _names
from omnispindle._core.validation import parameters as _parameters
from omnispindle._core.validation import retry_backoff as _retry_backoff
from omnispindle._core.validation import run_after as _run_after
from omnispindle._core.validation import task_ids as _task_ids
from omnispindle._core.validation import task_type as _task_type
from omnispindle._core.validation import timeout as _timeout


class _Default:
    """An option the caller left out: the task type's declared default, else the usual."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "default"


# Typed Any so that it stands in any option's signature (``priority: int = DEFAULT``).
DEFAULT: Any = _Default()


class TaskOptions(NamedTuple):
    """How a task is to run, as the caller gave it (``submit_task``'s keyword arguments).

    Each field is checked by :func:`task_spec`. A named tuple, not a dataclass: a
    batch makes one per entry.
    """

    # DEFAULT: the task type's declared default, else the usual one (_core.defaults).
    priority: int = DEFAULT
    dependencies: Iterable[int] | None = None
    max_retries: int = DEFAULT
    timeout: float | None = DEFAULT
    retry_backoff: float = DEFAULT
    required_capabilities: Iterable[str] | None = DEFAULT
    allow_failed_dependencies: bool = False
    run_at: datetime | None = None
    delay: float | timedelta | None = None
    idempotency_key: str | None = None
    group_key: str | None = None


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
    group_key: str | None = None  # its group, for a type with the fair strategy


DEFAULT_OPTIONS = TaskOptions()


def task_spec(
    task_type: Any, parameters: Any = None, options: TaskOptions = DEFAULT_OPTIONS
) -> TaskSpec:
    """Validate one task.

    Raises:
        ValidationError: naming the argument and what it must be.
    """
    # Unpacked once, checked field by field: a batch runs this for every entry.
    (priority, dependencies, retries, timeout, backoff, needs, tolerant, run_at, delay, key,
     group) = options  # fmt: skip
    declared = REGISTRY.get(task_type)
    if declared is not None:
        priority, retries, timeout, backoff, needs = _with_declared(
            declared, priority, retries, timeout, backoff, needs
        )
    return TaskSpec(
        _task_type(task_type),
        _parameters(parameters),
        _int_in_range("priority", _or(priority, defaults.PRIORITY), PRIORITY_RANGE),
        max_attempts(
            _int_in_range("max_retries", _or(retries, defaults.MAX_RETRIES), MAX_RETRIES_RANGE)
        ),
        _retry_backoff(_or(backoff, defaults.RETRY_BACKOFF)),
        _timeout(_or(timeout, None)),
        _names("required_capabilities", _or(needs, None), limits.current().required_capabilities),
        _task_ids("dependencies", dependencies),
        _flag("allow_failed_dependencies", tolerant),
        (),
        _run_after(run_at, delay),
        _idempotency_key(key),
        _group_key(group),
    )


def _or(given: Any, otherwise: Any) -> Any:
    """``given``, unless the caller left it out."""
    return otherwise if given is DEFAULT else given


def _with_declared(
    declared: DeclaredTask, priority: Any, retries: Any, timeout: Any, backoff: Any, needs: Any
) -> tuple[Any, Any, Any, Any, Any]:
    """The options the caller left out, from the task type's declaration where it has them."""
    return (
        priority if declared.priority is None else _or(priority, declared.priority),
        retries if declared.max_retries is None else _or(retries, declared.max_retries),
        timeout if declared.timeout is None else _or(timeout, declared.timeout),
        backoff if declared.retry_backoff is None else _or(backoff, declared.retry_backoff),
        needs
        if declared.required_capabilities is None
        else _or(needs, declared.required_capabilities),
    )


def options_of(fields: Mapping[str, Any], dependencies: Iterable[int]) -> TaskOptions:
    """The options among a batch entry's fields (its task type, parameters and key aside),
    with ``dependencies`` (the existing tasks among the entry's) for its own."""
    given = {name: value for name, value in fields.items() if name in _OPTION_FIELDS}
    given["dependencies"] = dependencies
    return TaskOptions(**given)


_OPTION_FIELDS = frozenset(TaskOptions._fields)
