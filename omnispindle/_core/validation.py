"""Checks on everything a caller submits, before anything reaches the database."""

from __future__ import annotations

import functools
import itertools
import json
import math
import re
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta, timezone
from numbers import Real
from typing import Any

from omnispindle._core import defaults, limits
from omnispindle.errors import ValidationError

# json.dumps writes NUL as \u0000 and a backslash as \\: an escape is a NUL only
# after an even run of backslashes.
_ESCAPED_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")
# One encoder for every call: json.dumps with options builds a new one each time.
# A letter or underscore, then letters, digits or underscores (any alphabet).
_SCHEMA_NAME = re.compile(r"[^\W\d]\w*")
_RESERVED_SCHEMAS = frozenset({"public", "information_schema"})
_JSON = json.JSONEncoder(allow_nan=False, ensure_ascii=False)
# Ids are bigint: beyond it, a statement fails untyped (no function takes a numeric id).
MAX_TASK_ID = 2**63 - 1


def task_id(value: Any) -> int:
    """Validate a task id (a positive int that a bigint holds)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_TASK_ID:
        raise ValidationError(
            f"a task id must be a positive int up to 2**63 - 1, got {quoted(value)}"
        )
    return value


def positive_number(name: str, value: Any) -> float:
    """Validate a finite number greater than zero (seconds, intervals)."""
    if not _is_number(value) or not _finite(value) or value <= 0:
        raise ValidationError(f"{name} must be a positive number, got {quoted(value)}")
    return float(value)


def _finite(value: Any) -> bool:
    """True for a number a float holds: an int too large for one is not."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def seconds(name: str, value: Any) -> float:
    """Validate a wait or an interval: positive seconds, at most ``MAX_SECONDS``."""
    number = positive_number(name, value)
    if number > defaults.MAX_SECONDS:
        raise ValidationError(
            f"{name} must be at most {defaults.MAX_SECONDS:g} seconds (about 31 years), "
            f"got {quoted(value)}"
        )
    return number


def optional_seconds(name: str, value: Any) -> float | None:
    """None, or a wait or an interval as ``seconds`` takes it."""
    return None if value is None else seconds(name, value)


def optional_positive_number(name: str, value: Any) -> float | None:
    """None, or a finite number greater than zero."""
    return None if value is None else positive_number(name, value)


def json_text(value: Any, what: str, max_bytes: int | None = None) -> str:
    """Serialize ``value`` as JSON that a jsonb column accepts.

    Raises:
        ValidationError: as ``sized_json_text``.
    """
    return sized_json_text(value, what, max_bytes)[0]


def sized_json_text(value: Any, what: str, max_bytes: int | None = None) -> tuple[str, int]:
    """``value`` as JSON that a jsonb column accepts, and its length in UTF-8 bytes.

    Raises:
        ValidationError: not JSON-serializable, holding NaN, NUL or text that
            is not valid Unicode, or longer than ``max_bytes`` in UTF-8; the
            message starts with ``what``.
    """
    try:
        text = _JSON.encode(value)
        size = len(text.encode("utf-8"))
    except RecursionError:
        raise ValidationError(_too_deep(what)) from None
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"{what} is not JSON-serializable: {cut(str(exc))}") from None
    if max_bytes is not None and size > max_bytes:
        raise ValidationError(
            f"{what}: {size:,} bytes as JSON, over the limit of {max_bytes:,} "
            "(omnispindle.set_limits)"
        )
    if "\\u0000" in text and _ESCAPED_NUL.search(text):
        raise ValidationError(f"{what} contains a NUL character, which jsonb cannot store")
    # Each level takes two characters, and brackets counted in C bound the depth
    # from above: the exact depth is rarely needed, and short texts need no count.
    if (
        len(text) > 2 * defaults.MAX_JSON_DEPTH
        and text.count("[") + text.count("{") > defaults.MAX_JSON_DEPTH
        and json_depth(text) > defaults.MAX_JSON_DEPTH
    ):
        raise ValidationError(_too_deep(what))
    return text, size


def _too_deep(what: str) -> str:
    return (
        f"{what} nests lists and objects more than {defaults.MAX_JSON_DEPTH} levels deep, "
        "which a worker could not decode"
    )


_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_OPENS_AND_CLOSES = str.maketrans({"[": "(", "{": "(", "]": ")", "}": ")"})
_STEP = {"(": 1, ")": -1}


def json_depth(text: str) -> int:
    """How deep lists and objects nest in the JSON ``text`` (0 for a scalar)."""
    brackets = _JSON_STRING.sub("", text).translate(_OPENS_AND_CLOSES)
    steps = [_STEP[c] for c in brackets if c in _STEP]
    return max(itertools.accumulate(steps), default=0)


def quoted(value: Any) -> str:
    """``repr(value)``, cut short: errors name a value without echoing a megabyte
    of it, or all of a secret."""
    return cut(repr(value))


def cut(text: str, limit: int = 60) -> str:
    """``text``, or its first ``limit`` characters and how long it was."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def task_type(value: Any) -> str:
    """Validate a task type: a non-empty name Postgres can store."""
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(f"task_type must be a non-empty string, got {quoted(value)}")
    if not _storable_task_type(value):
        raise ValidationError(
            f"task_type must be at most {defaults.MAX_TASK_TYPE_LENGTH} characters "
            "of valid text without NUL"
        )
    return value


@functools.lru_cache(maxsize=1024)
def _storable_task_type(value: str) -> bool:
    """Cached: a batch repeats a few task types thousands of times."""
    return len(value) <= defaults.MAX_TASK_TYPE_LENGTH and _storable_text(value)


def parameters(value: Any) -> str:
    """Validate a task's parameters (a dict, or None for none) and return their JSON."""
    if value is None:
        return "{}"
    if type(value) is not dict and not isinstance(value, Mapping):  # the ABC check is slow
        raise ValidationError(f"parameters must be a dict, got {type(value).__name__}")
    return json_text(value, "parameters", limits.current().parameters_bytes)


def int_in_range(name: str, value: Any, bounds: tuple[int, int]) -> int:
    """Validate an int (not a bool) within inclusive ``bounds``."""
    low, high = bounds
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValidationError(f"{name} must be an int from {low} to {high}, got {quoted(value)}")
    return value


def retry_backoff(value: Any) -> float:
    """Validate the base of a task's backoff: seconds from 0 to an hour."""
    if not _is_number(value) or not _finite(value) or not 0 <= value <= defaults.MAX_RETRY_BACKOFF:
        raise ValidationError(
            f"retry_backoff must be a number of seconds from 0 to {defaults.MAX_RETRY_BACKOFF:g}, "
            f"got {quoted(value)}"
        )
    return float(value)


def timeout(value: Any) -> float | None:
    """Validate a task's timeout: None, or seconds as ``seconds`` takes them."""
    return optional_seconds("timeout", value)


def names(name: str, value: Any, most: int | None = None) -> tuple[str, ...]:
    """Validate a list of names (capabilities), each a non-empty string of at most
    ``MAX_TASK_TYPE_LENGTH`` characters, at most ``most`` of them; duplicates dropped."""
    if value is None:
        return ()
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
        raise ValidationError(f"{name} must be a list of strings, got {quoted(value)}")
    items = tuple(value)
    if not all(isinstance(item, str) and item and _storable_task_type(item) for item in items):
        raise ValidationError(
            f"{name} must be a list of non-empty strings of at most "
            f"{defaults.MAX_TASK_TYPE_LENGTH} characters, got {quoted(value)}"
        )
    unique = tuple(dict.fromkeys(items))
    if most is not None and len(unique) > most:
        raise ValidationError(
            f"{name} holds {len(unique)} names, over the limit of {most} (omnispindle.set_limits)"
        )
    return unique


def task_ids(name: str, value: Any) -> tuple[int, ...]:
    """Validate a list of task ids; duplicates dropped, order kept."""
    if value is None or (type(value) is list and not value):
        return ()
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
        raise ValidationError(f"{name} must be a list of task ids, got {quoted(value)}")
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
            f"{name} must be timezone-aware, e.g. datetime.now(timezone.utc), got {quoted(value)}"
        )
    return value


def run_after(run_at: Any, delay: Any) -> datetime | None:
    """When a task may start, from ``run_at`` or ``delay`` (at most one); None for now."""
    if run_at is not None and delay is not None:
        raise ValidationError("give run_at or delay, not both")
    if run_at is not None:
        return _in_the_calendar(aware_datetime("run_at", run_at))
    if delay is None:
        return None
    seconds = delay.total_seconds() if isinstance(delay, timedelta) else delay
    if not _is_number(seconds) or not _finite(seconds) or seconds < 0:
        raise ValidationError(
            f"delay must be a non-negative number of seconds or a timedelta, got {quoted(delay)}"
        )
    try:
        return datetime.now(timezone.utc) + timedelta(seconds=seconds)
    except OverflowError:
        raise ValidationError(f"delay {quoted(delay)} reaches beyond the year 9999") from None


def _in_the_calendar(run_at: datetime) -> datetime:
    """``run_at``, if it falls within the years 1 to 9999 in UTC: stored outside
    them, a task's record could not be read back into a datetime."""
    try:
        run_at.astimezone(timezone.utc)
    except OverflowError:
        raise ValidationError(
            f"run_at {quoted(run_at)} falls outside the years 1 to 9999 in UTC"
        ) from None
    return run_at


def idempotency_key(value: Any) -> str | None:
    """Validate an idempotency key: None, or 1 to 200 characters of storable text."""
    return _optional_key("idempotency_key", value)


def group_key(value: Any) -> str | None:
    """Validate a fair-share group key: None, or 1 to 200 characters of storable text."""
    return _optional_key("group_key", value)


def _optional_key(name: str, value: Any) -> str | None:
    if value is None:
        return None
    if (
        not isinstance(value, str)
        or not value
        or len(value) > defaults.MAX_KEY_LENGTH
        or not _storable_text(value)
    ):
        raise ValidationError(
            f"{name} must be a non-empty string of at most {defaults.MAX_KEY_LENGTH} "
            f"characters, got {quoted(value)}"
        )
    return value


def cancel_reason(value: Any) -> str | None:
    """Validate a cancel reason: None, or at most a few lines of storable text."""
    if value is None:
        return None
    if (
        not isinstance(value, str)
        or len(value) > defaults.MAX_REASON_LENGTH
        or not _storable_text(value)
    ):
        raise ValidationError(
            f"reason must be a string of at most {defaults.MAX_REASON_LENGTH} characters "
            f"without NUL, got {quoted(value)}"
        )
    return value


def schema_name(value: Any) -> str:
    """Validate the name of a queue's schema: a lowercase identifier that psql
    reads unquoted, short enough for its notification channels."""
    if not isinstance(value, str) or not _SCHEMA_NAME.fullmatch(value) or value != value.lower():
        raise ValidationError(
            f"schema must be a lowercase name of letters, digits and underscores that "
            f"starts with a letter or underscore, got {quoted(value)}"
        )
    if len(value.encode("utf-8")) > defaults.MAX_SCHEMA_NAME_BYTES:
        raise ValidationError(
            f"schema must be at most {defaults.MAX_SCHEMA_NAME_BYTES} bytes long, "
            f"got {quoted(value)}"
        )
    if value.startswith("pg_") or value in _RESERVED_SCHEMAS:
        raise ValidationError(
            f"schema {value!r} belongs to Postgres or to every user: pick another"
        )
    return value


def _storable_text(value: str) -> bool:
    """Postgres text holds valid UTF-8 without NUL."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\x00" not in value


def flag(name: str, value: Any) -> bool:
    """Validate a bool (not merely a truthy value)."""
    if not isinstance(value, bool):
        raise ValidationError(f"{name} must be True or False, got {quoted(value)}")
    return value


def _is_number(value: Any) -> bool:
    # The exact types first: an ABC check costs a microsecond per entry of a batch.
    return type(value) in (int, float) or (isinstance(value, Real) and not isinstance(value, bool))
