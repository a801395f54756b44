"""A periodic schedule, checked: a name, a cron expression, and the task of each tick."""

from __future__ import annotations

from typing import Any, NamedTuple

from omnispindle._core import defaults
from omnispindle._core.cron import UTC_NAME, CronExpression
from omnispindle._core.specs import TaskOptions, TaskSpec, task_spec
from omnispindle._core.validation import quoted
from omnispindle.errors import ValidationError


class Schedule(NamedTuple):
    """A validated schedule: its task is a spec without dependencies or key."""

    name: str
    cron: CronExpression
    task: TaskSpec
    enabled: bool


def schedule(
    name: Any,
    cron: Any,
    task_type: Any,
    parameters: Any,
    options: TaskOptions,
    enabled: Any,
    tz: Any = UTC_NAME,
) -> Schedule:
    """Validate a schedule.

    Raises:
        CronExpressionError: the cron expression is invalid or never fires, or
            the time zone is unknown.
        ValidationError: another argument is invalid.
    """
    if not isinstance(name, str) or not name or len(name) > defaults.MAX_KEY_LENGTH:
        raise ValidationError(
            f"a periodic task's name must be a non-empty string of at most "
            f"{defaults.MAX_KEY_LENGTH} characters, got {quoted(name)}"
        )
    expression = CronExpression.parse(cron, tz)
    spec = task_spec(task_type, parameters, options)
    if not isinstance(enabled, bool):
        raise ValidationError(f"enabled must be True or False, got {quoted(enabled)}")
    return Schedule(name, expression, spec, enabled)
