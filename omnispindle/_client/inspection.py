"""Reading tasks for people: filtered lists and one task in full."""

from __future__ import annotations

from typing import Any, Iterable

from omnispindle._db.pool import Database
from omnispindle.errors import TaskNotFoundError, ValidationError
from omnispindle.states import TaskState


def list_tasks(db: Database, *, task_types: Iterable[str] = (), states: Iterable[str] = (),
               older_than: float | None = None, limit: int = 50) -> list[dict[str, Any]]:
    """The newest tasks matching every filter given (an empty filter matches all).

    Args:
        task_types: any of these types.
        states: any of these states.
        older_than: created more than this many seconds ago.
        limit: most rows returned.

    Raises:
        ValidationError: an unknown state.
    """
    return db.fetch("list_tasks", {
        "task_types": list(task_types) or None,
        "states": [_state(s) for s in states] or None,
        "older_than": older_than,
        "limit": limit,
    })


def task_detail(db: Database, task_id: int) -> dict[str, Any]:
    """One task with its error history, worker name, dependencies and dependents.

    Raises:
        TaskNotFoundError: no task has this id.
    """
    rows = db.fetch("show_task", {"id": task_id})
    if not rows:
        raise TaskNotFoundError(f"no task with id {task_id}")
    return rows[0]


def require_tasks(db: Database, task_ids: list[int]) -> dict[int, str]:
    """The current state of each task.

    Raises:
        TaskNotFoundError: naming the first id that does not exist.
    """
    states = {row["task_id"]: row["state"] for row in db.fetch("task_states", {"ids": task_ids})}
    missing = [task_id for task_id in task_ids if task_id not in states]
    if missing:
        raise TaskNotFoundError(f"no task with id {missing[0]}")
    return states


def _state(value: str) -> str:
    try:
        return TaskState(value).value
    except ValueError:
        choices = ", ".join(s.value for s in TaskState)
        raise ValidationError(f"unknown task state {value!r} (one of {choices})") from None
