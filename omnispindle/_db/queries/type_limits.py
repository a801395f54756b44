"""Typed statements on task type limits and strategies (``sql/queries/type_limits.sql``)."""

from __future__ import annotations

from omnispindle._db.pg_arrays import ArrayLiteral
from omnispindle._db.query import Query, nothing, rows, value
from omnispindle._db.rows import LimitOfType, TaskTypeLimit, TaskTypeStrategy
from omnispindle._db.statements import RUNTIME


def set_task_type_limit(
    task_type: str,
    max_running: int | None,
    starts_per_second: float | None,
    burst: int | None,
    max_running_per_group: int | None,
    starts_per_second_per_group: float | None,
) -> Query[None]:
    """Set (or replace) the limits of a task type."""
    params = {
        "task_type": task_type,
        "max_running": max_running,
        "starts_per_second": starts_per_second,
        "burst": burst,
        "max_running_per_group": max_running_per_group,
        "starts_per_second_per_group": starts_per_second_per_group,
    }
    return Query(RUNTIME["set_task_type_limit"], params, nothing)


def clear_task_type_limit(task_type: str) -> Query[bool]:
    """Remove a task type's limits; False if it had none."""
    return Query(RUNTIME["clear_task_type_limit"], {"task_type": task_type}, value("changed"))


def task_type_limits() -> Query[list[TaskTypeLimit]]:
    """Every limited task type, by name, with what holds it now."""
    return Query(RUNTIME["task_type_limits"], None, rows)


def limits_of_types(task_types: ArrayLiteral) -> Query[list[LimitOfType]]:
    """Those of these task types that claims take apart, with their limits if any."""
    return Query(RUNTIME["limits_of_types"], {"task_types": task_types}, rows)


def set_task_type_strategy(
    task_type: str, strategy: str, aging_seconds: float | None
) -> Query[None]:
    """Set the strategy of a task type ('priority' removes any other)."""
    params = {"task_type": task_type, "strategy": strategy, "aging_seconds": aging_seconds}
    return Query(RUNTIME["set_task_type_strategy"], params, nothing)


def task_type_strategies() -> Query[list[TaskTypeStrategy]]:
    """Every task type with a strategy other than strict priority, by name."""
    return Query(RUNTIME["task_type_strategies"], None, rows)
