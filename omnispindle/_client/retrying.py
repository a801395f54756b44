"""Running failed tasks again, all or nothing."""

from __future__ import annotations

from typing import Any, Iterable

import psycopg

from omnispindle._db.pool import run
from omnispindle.errors import TaskNotFoundError, TaskStateError
from omnispindle.states import TaskState


def retry_tasks(conn: psycopg.Connection, task_ids: Iterable[int]) -> list[dict[str, Any]]:
    """Put failed tasks back to pending, each with an attempt left, in one transaction.

    Every task is locked and checked before any changes, so one unknown or
    unfailed task leaves all of them as they were.

    Returns:
        ``{"task_id", "state", "message"}`` per task, in the given order.

    Raises:
        TaskNotFoundError: an id does not exist.
        TaskStateError: a task is not failed.
    """
    ids = list(dict.fromkeys(task_ids))
    with conn.transaction():
        locked = {row["task_id"]: row for row in run(conn, "lock_tasks", {"ids": ids})}
        _check_retryable(ids, locked)
        retried = {row["task_id"]: row for row in run(conn, "retry_failed_tasks", {"ids": ids})}
    return [_outcome(retried[task_id]) for task_id in ids]


def _check_retryable(ids: list[int], locked: dict[int, dict[str, Any]]) -> None:
    missing = [task_id for task_id in ids if task_id not in locked]
    if missing:
        raise TaskNotFoundError(f"no task with id {missing[0]}")
    keys: dict[str, int] = {}
    for task_id in ids:
        row = locked[task_id]
        if row["state"] != TaskState.FAILED.value:
            raise TaskStateError(f"task {task_id} is {row['state']}; only failed tasks can be retried")
        key = row["idempotency_key"]
        holder = row["key_holder"] or keys.get(key)
        if key is not None and holder is not None:
            raise TaskStateError(f"task {task_id}'s idempotency key {key!r} is held by "
                                 f"unfinished task {holder}; it cannot run twice at once")
        if key is not None:
            keys[key] = task_id


def _outcome(row: dict[str, Any]) -> dict[str, Any]:
    attempt = row["attempts"] + 1
    return {"task_id": row["task_id"], "state": row["state"],
            "message": f"task {row['task_id']} is pending again "
                       f"(attempt {attempt} of {row['max_attempts']})"}
