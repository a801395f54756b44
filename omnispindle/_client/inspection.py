"""Reading tasks for people: filtered lists, one task in full, the states of several."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from omnispindle._db import queries as q
from omnispindle._db.query import Query, then
from omnispindle._db.rows import TaskDetail, TaskListRow, TaskStateRow
from omnispindle.errors import TaskNotFoundError, ValidationError
from omnispindle.states import TaskState


def list_tasks(
    *,
    task_types: Iterable[str] = (),
    states: Iterable[str] = (),
    older_than: float | None = None,
    limit: int = 50,
) -> Query[list[TaskListRow]]:
    """The newest tasks matching every filter given (an empty filter matches all).

    Args:
        task_types: any of these types.
        states: any of these states.
        older_than: created more than this many seconds ago.
        limit: most rows returned.

    Raises:
        ValidationError: an unknown state.
    """
    return q.inspection.list_tasks(
        task_types=list(task_types) or None,
        states=[_state(s) for s in states] or None,
        older_than=older_than,
        limit=limit,
    )


def task_detail(task_id: int) -> Query[TaskDetail]:
    """One task with its error history, worker name, dependencies and dependents.

    Raises:
        TaskNotFoundError: (when run) no task has this id.
    """

    def found(detail: TaskDetail | None) -> TaskDetail:
        if detail is None:
            raise TaskNotFoundError(f"no task with id {task_id}")
        return detail

    return then(q.inspection.show_task(task_id), found)


def require_tasks(task_ids: Sequence[int]) -> Query[dict[int, str]]:
    """The current state of each task.

    Raises:
        TaskNotFoundError: (when run) naming the first id that does not exist.
    """

    def states_of(rows: list[TaskStateRow]) -> dict[int, str]:
        states = {row["task_id"]: row["state"] for row in rows}
        missing = [task_id for task_id in task_ids if task_id not in states]
        if missing:
            raise TaskNotFoundError(f"no task with id {missing[0]}")
        return states

    return then(q.inspection.task_states(task_ids), states_of)


def _state(value: str) -> str:
    try:
        return TaskState(value).value
    except ValueError:
        choices = ", ".join(s.value for s in TaskState)
        raise ValidationError(f"unknown task state {value!r} (one of {choices})") from None
