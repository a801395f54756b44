"""What the clients return: task records, cancel and retry outcomes, streaming events.

Pure functions and typed dicts, so that both clients shape their answers
identically.
"""

from __future__ import annotations

from typing import Literal, TypedDict

from omnispindle._db.rows import Json, RetriedTask, StreamRow, TaskRecord
from omnispindle.errors import TaskFailedError
from omnispindle.states import TaskState

DEFAULT_CANCEL_REASON = "cancelled by request"


class CancelOutcome(TypedDict):
    """What cancelling one task did; ``cancelled`` is False if it had already finished."""

    task_id: int
    state: str
    cancelled: bool
    message: str


class RetryOutcome(TypedDict):
    """A failed task put back to pending; ``dependents``: those that wait for it again."""

    task_id: int
    state: str
    dependents: list[int]
    message: str


class PartialEvent(TypedDict):
    """A streamed partial result."""

    kind: Literal["partial"]
    seq: int
    attempt: int
    data: Json


class FinalEvent(TypedDict):
    """The last streaming event: the finished task's record."""

    kind: Literal["final"]
    task: TaskRecord


StreamEvent = PartialEvent | FinalEvent


def task_record(row: TaskRecord) -> TaskRecord:
    """A ``get_tasks`` row as clients return it (``dependencies`` a list, never None)."""
    record = row.copy()
    record["dependencies"] = list(row["dependencies"] or [])
    return record


def raise_if_failed(task: TaskRecord) -> TaskRecord:
    """Return a finished task's record, or raise :class:`TaskFailedError` unless it succeeded."""
    if task["state"] != TaskState.SUCCEEDED.value:
        raise TaskFailedError(task)
    return task


def cancel_outcome(task_id: int, state: str, changed: bool) -> CancelOutcome:
    """The outcome of cancelling one task (or of finding it finished)."""
    if not changed:
        message = f"task {task_id} already {state}; nothing to cancel"
    elif state == TaskState.RUNNING.value:
        message = f"task {task_id} is running; its worker has been asked to stop it"
    else:
        message = f"task {task_id} cancelled"
    return {"task_id": task_id, "state": state, "cancelled": changed, "message": message}


def retry_outcome(row: RetriedTask) -> RetryOutcome:
    """The outcome of retrying one failed task."""
    attempt = row["attempts"] + 1
    message = f"task {row['task_id']} is pending again (attempt {attempt} of {row['max_attempts']})"
    if row["dependents"]:
        message += f"; dependents {', '.join(map(str, row['dependents']))} wait for it again"
    return {
        "task_id": row["task_id"],
        "state": row["state"],
        "dependents": row["dependents"],
        "message": message,
    }


def partial_event(row: StreamRow) -> PartialEvent:
    """A ``read_stream`` row as a streaming event."""
    return {"kind": "partial", "seq": row["seq"], "attempt": row["attempt"], "data": row["payload"]}


def final_event(task: TaskRecord) -> FinalEvent:
    """The last streaming event: the finished task's record."""
    return {"kind": "final", "task": task}
