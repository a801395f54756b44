"""Typed statements on task type limits (``sql/queries/type_limits.sql``)."""

from __future__ import annotations

from omnispindle._db.pg_arrays import ArrayLiteral
from omnispindle._db.query import Query, nothing, rows, value
from omnispindle._db.rows import LimitOfType, TaskTypeLimit
from omnispindle._db.statements import RUNTIME


def set_task_type_limit(
    task_type: str, max_running: int | None, starts_per_second: float | None, burst: int | None
) -> Query[None]:
    """Set (or replace) the limits of a task type."""
    params = {
        "task_type": task_type,
        "max_running": max_running,
        "starts_per_second": starts_per_second,
        "burst": burst,
    }
    return Query(RUNTIME["set_task_type_limit"], params, nothing)


def clear_task_type_limit(task_type: str) -> Query[bool]:
    """Remove a task type's limits; False if it had none."""
    return Query(RUNTIME["clear_task_type_limit"], {"task_type": task_type}, value("changed"))


def task_type_limits() -> Query[list[TaskTypeLimit]]:
    """Every limited task type, by name, with what holds it now."""
    return Query(RUNTIME["task_type_limits"], None, rows)


def limits_of_types(task_types: ArrayLiteral) -> Query[list[LimitOfType]]:
    """The limits of these task types (those that have some)."""
    return Query(RUNTIME["limits_of_types"], {"task_types": task_types}, rows)
