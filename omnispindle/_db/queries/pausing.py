"""Typed statements on paused task types (``sql/queries/pausing.sql``)."""

from __future__ import annotations

from omnispindle._db.query import Query, rows, value
from omnispindle._db.rows import PausedTaskType
from omnispindle._db.statements import RUNTIME


def pause_task_type(task_type: str, reason: str | None) -> Query[bool]:
    """Pause a task type; False if it was paused already."""
    return Query(
        RUNTIME["pause_task_type"], {"task_type": task_type, "reason": reason}, value("changed")
    )


def resume_task_type(task_type: str) -> Query[bool]:
    """Resume a task type; False if it was not paused."""
    return Query(RUNTIME["resume_task_type"], {"task_type": task_type}, value("changed"))


def paused_task_types() -> Query[list[PausedTaskType]]:
    """Every paused task type, by name."""
    return Query(RUNTIME["paused_task_types"], None, rows)
