"""How big a task may be: the limits every process checks before writing.

The database holds ceilings of its own that also stop writers using plain
SQL: for tasks, the rules that ``omnispindle.broken_request_rule`` and
``omnispindle.broken_outcome_rule`` check when a row is written; for other
tables, CHECK constraints. These limits may be set lower or higher, up to
those ceilings, for the whole process.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

from omnispindle.errors import ValidationError

MIB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """The size limits in force.

    Attributes:
        parameters_bytes: a task's parameters, as JSON.
        result_bytes: an executor's result, as JSON.
        partial_result_bytes: each streamed partial result, as JSON.
        stream_bytes: all partial results of one attempt together.
        required_capabilities: the capabilities one task may require.
    """

    parameters_bytes: int = 1 * MIB
    result_bytes: int = 16 * MIB
    partial_result_bytes: int = 1 * MIB
    stream_bytes: int = 64 * MIB
    required_capabilities: int = 64


# What the database refuses beyond, whatever a process allows.
CEILINGS = Limits(
    parameters_bytes=64 * MIB,
    result_bytes=64 * MIB,
    partial_result_bytes=16 * MIB,
    stream_bytes=1024 * MIB,  # in the database: at most 100,000 partial results a task
    required_capabilities=1000,
)

_current = Limits()


def current() -> Limits:
    """The limits this process checks."""
    return _current


def set_limits(**changes: int) -> Limits:
    """Change this process's size limits (each a positive int, at most the database's
    ceiling); returns the limits now in force. Set them alike in every process.

    Raises:
        ValidationError: an unknown name, or a value out of range; nothing changes.
    """
    global _current
    known = {field.name for field in fields(Limits)}
    for name, value in changes.items():
        if name not in known:
            raise ValidationError(f"no limit is called {name!r}; the limits are {sorted(known)}")
        ceiling = getattr(CEILINGS, name)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= ceiling:
            raise ValidationError(f"{name} must be an int from 1 to {ceiling}, got {value!r}")
    _current = replace(_current, **changes)
    return _current
