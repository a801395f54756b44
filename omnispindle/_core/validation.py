"""Checks on everything a caller submits, before anything reaches the database."""

from __future__ import annotations

import functools
import json
import math
import re
from datetime import datetime, timedelta, timezone
from numbers import Real
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from omnispindle.errors import ValidationError

PRIORITY_RANGE = (-1000, 1000)
MAX_RETRIES_RANGE = (0, 100)
MAX_RETRY_BACKOFF = 3600.0
MAX_TASK_TYPE_LENGTH = 200
MAX_KEY_LENGTH = 200
# json.dumps writes NUL as \u0000 and a backslash as \\: an escape is a NUL only
# after an even run of backslashes.
_ESCAPED_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")
# One encoder for every call: json.dumps with options builds a new one each time.
_JSON = json.JSONEncoder(allow_nan=False, ensure_ascii=False)
BATCH_FIELDS = frozenset({
    "task_type", "parameters", "priority", "dependencies", "max_retries",
    "timeout", "retry_backoff", "required_capabilities", "allow_failed_dependencies", "key",
    "run_at", "delay", "idempotency_key",
})


class TaskSpec(NamedTuple):
    """One validated task, in the shape the ``submit_tasks`` statement takes.

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


def task_spec(task_type: Any, parameters: Any = None, priority: Any = 0,
              dependencies: Any = None, max_retries: Any = 3, timeout: Any = None,
              retry_backoff: Any = 1.0, required_capabilities: Any = None,
              allow_failed_dependencies: Any = False, run_at: Any = None, delay: Any = None,
              idempotency_key: Any = None) -> TaskSpec:
    """Validate one task's arguments.

    Raises:
        ValidationError: naming the argument and what it must be.
    """
    return TaskSpec(
        task_type=_task_type(task_type),
        parameters_json=_parameters(parameters),
        priority=int_in_range("priority", priority, PRIORITY_RANGE),
        max_attempts=int_in_range("max_retries", max_retries, MAX_RETRIES_RANGE) + 1,
        retry_backoff=_retry_backoff(retry_backoff),
        timeout=_timeout(timeout),
        required_capabilities=names("required_capabilities", required_capabilities),
        dependencies=_task_ids("dependencies", dependencies),
        allow_failed_dependencies=_flag("allow_failed_dependencies", allow_failed_dependencies),
        run_after=_run_after(run_at, delay),
        idempotency_key=_idempotency_key(idempotency_key),
    )


def task_id(value: Any) -> int:
    """Validate a task id (a positive int)."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValidationError(f"a task id must be a positive int, got {value!r}")
    return value


def positive_number(name: str, value: Any, *, allow_none: bool = False) -> float | None:
    """Validate a finite number greater than zero (seconds, intervals)."""
    if value is None and allow_none:
        return None
    if not _is_number(value) or not math.isfinite(value) or value <= 0:
        raise ValidationError(f"{name} must be a positive number, got {value!r}")
    return float(value)


def json_text(value: Any, what: str) -> str:
    """Serialize ``value`` as JSON that a jsonb column accepts.

    Raises:
        ValidationError: not JSON-serializable, or holding NaN, NUL or text
            that is not valid Unicode; the message starts with ``what``.
    """
    try:
        text = _JSON.encode(value)
        text.encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"{what} is not JSON-serializable: {exc}") from None
    if "\\u0000" in text and _ESCAPED_NUL.search(text):
        raise ValidationError(f"{what} contains a NUL character, which jsonb cannot store")
    return text


def _task_type(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(f"task_type must be a non-empty string, got {value!r}")
    if not _storable_task_type(value):
        raise ValidationError(
            f"task_type must be at most {MAX_TASK_TYPE_LENGTH} characters of valid text without NUL")
    return value


@functools.lru_cache(maxsize=1024)
def _storable_task_type(value: str) -> bool:
    """Cached: a batch repeats a few task types thousands of times."""
    return len(value) <= MAX_TASK_TYPE_LENGTH and _storable_text(value)


def _parameters(value: Any) -> str:
    if value is None:
        return "{}"
    if type(value) is not dict and not isinstance(value, Mapping):  # the ABC check is slow
        raise ValidationError(f"parameters must be a dict, got {type(value).__name__}")
    return json_text(value, "parameters")


def int_in_range(name: str, value: Any, bounds: tuple[int, int]) -> int:
    """Validate an int (not a bool) within inclusive ``bounds``."""
    low, high = bounds
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValidationError(f"{name} must be an int from {low} to {high}, got {value!r}")
    return value


def _retry_backoff(value: Any) -> float:
    if not _is_number(value) or not math.isfinite(value) or not 0 <= value <= MAX_RETRY_BACKOFF:
        raise ValidationError(
            f"retry_backoff must be a number of seconds from 0 to {MAX_RETRY_BACKOFF:g}, "
            f"got {value!r}")
    return float(value)


def _timeout(value: Any) -> float | None:
    return positive_number("timeout", value, allow_none=True)


def names(name: str, value: Any) -> tuple[str, ...]:
    """Validate a list of non-empty strings (capabilities); duplicates dropped."""
    if value is None:
        return ()
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
        raise ValidationError(f"{name} must be a list of strings, got {value!r}")
    items = tuple(value)
    if not all(isinstance(item, str) and item and _storable_text(item) for item in items):
        raise ValidationError(f"{name} must be a list of non-empty strings, got {value!r}")
    return tuple(dict.fromkeys(items))


def _task_ids(name: str, value: Any) -> tuple[int, ...]:
    if value is None or (type(value) is list and not value):
        return ()
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
        raise ValidationError(f"{name} must be a list of task ids, got {value!r}")
    try:
        return tuple(dict.fromkeys(task_id(item) for item in value))
    except ValidationError as exc:
        raise ValidationError(f"{name}: {exc}") from None


def aware_datetime(name: str, value: Any) -> datetime:
    """Validate a timezone-aware datetime (a naive one is ambiguous across hosts)."""
    if not isinstance(value, datetime):
        raise ValidationError(f"{name} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValidationError(
            f"{name} must be timezone-aware, e.g. datetime.now(timezone.utc), got {value!r}")
    return value


def _run_after(run_at: Any, delay: Any) -> datetime | None:
    if run_at is not None and delay is not None:
        raise ValidationError("give run_at or delay, not both")
    if run_at is not None:
        return aware_datetime("run_at", run_at)
    if delay is None:
        return None
    seconds = delay.total_seconds() if isinstance(delay, timedelta) else delay
    if not _is_number(seconds) or not math.isfinite(seconds) or seconds < 0:
        raise ValidationError(
            f"delay must be a non-negative number of seconds or a timedelta, got {delay!r}")
    try:
        return datetime.now(timezone.utc) + timedelta(seconds=seconds)
    except OverflowError:
        raise ValidationError(f"delay {delay!r} reaches beyond the year 9999") from None


def _idempotency_key(value: Any) -> str | None:
    if value is None:
        return None
    if (not isinstance(value, str) or not value or len(value) > MAX_KEY_LENGTH
            or not _storable_text(value)):
        raise ValidationError(
            f"idempotency_key must be a non-empty string of at most {MAX_KEY_LENGTH} "
            f"characters, got {value!r}")
    return value


def _storable_text(value: str) -> bool:
    """Postgres text holds valid UTF-8 without NUL."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\x00" not in value


def _flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValidationError(f"{name} must be True or False, got {value!r}")
    return value


def _is_number(value: Any) -> bool:
    # The exact types first: an ABC check costs a microsecond per entry of a batch.
    return type(value) in (int, float) or (isinstance(value, Real) and not isinstance(value, bool))
