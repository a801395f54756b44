"""What the sync and async clients share: task records, cancel outcomes, waiting accounts.

Pure functions and plain data only, so that both clients shape their answers
and count finished tasks identically; each does its own I/O.
"""

from __future__ import annotations

from typing import Any, Iterable

from . import validation
from .errors import TaskFailedError, TaskNotFoundError, WaitTimeoutError
from .states import FINISHED_VALUES, TaskState

DEFAULT_CANCEL_REASON = "cancelled by request"


def task_record(row: dict[str, Any]) -> dict[str, Any]:
    """A ``get_tasks`` row as clients return it (``dependencies`` a list, never None)."""
    record = dict(row)
    record["dependencies"] = list(row["dependencies"] or [])
    return record


def require_found(ids: list[int], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Return ``rows``; raise :class:`TaskNotFoundError` naming the first id without one."""
    found = {row["task_id"] for row in rows}
    missing = [i for i in ids if i not in found]
    if missing:
        raise TaskNotFoundError(f"no task with id {missing[0]}")
    return rows


def raise_if_failed(task: dict[str, Any]) -> dict[str, Any]:
    """Return a finished task's record, or raise :class:`TaskFailedError` unless it succeeded."""
    if task["state"] != TaskState.SUCCEEDED.value:
        raise TaskFailedError(task)
    return task


def cancel_params(task_id: Any, reason: Any) -> dict[str, Any]:
    """Validated parameters of the ``cancel_task`` statement."""
    task_id = validation.task_id(task_id)
    if reason is not None and not isinstance(reason, str):
        raise validation.ValidationError(f"reason must be a string, got {reason!r}")
    return {"id": task_id, "reason": reason or DEFAULT_CANCEL_REASON}


def cancel_outcome(task_id: int, state: str, changed: bool) -> dict[str, Any]:
    """``{"task_id", "state", "cancelled", "message"}`` for one cancelled (or finished) task."""
    if not changed:
        message = f"task {task_id} already {state}; nothing to cancel"
    elif state == TaskState.RUNNING.value:
        message = f"task {task_id} is running; its worker has been asked to stop it"
    else:
        message = f"task {task_id} cancelled"
    return {"task_id": task_id, "state": state, "cancelled": changed, "message": message}


def partial_event(row: dict[str, Any]) -> dict[str, Any]:
    """A ``read_stream`` row as a streaming event."""
    return {"kind": "partial", "seq": row["seq"], "attempt": row["attempt"], "data": row["payload"]}


def final_event(task: dict[str, Any]) -> dict[str, Any]:
    """The last streaming event: the finished task's record."""
    return {"kind": "final", "task": task}


class FinishedTasks:
    """The account of one wait: which of the given ids have finished, and their records.

    Args:
        task_ids: the ids waited for, in the order results are returned
            (an id may repeat).
        timeout: seconds the wait may take, or None.

    Raises:
        ValidationError: an id or the timeout is invalid.
    """

    def __init__(self, task_ids: Iterable[int], timeout: float | None) -> None:
        self.ids = [validation.task_id(i) for i in task_ids]
        validation.positive_number("timeout", timeout, allow_none=True)
        self.timeout = timeout
        self.total = len(set(self.ids))
        self._records: dict[int, dict[str, Any]] = {}

    @property
    def count(self) -> int:
        """How many distinct tasks have finished."""
        return len(self._records)

    @property
    def done(self) -> bool:
        return self.count == self.total

    def unfinished(self) -> list[int]:
        """Ids still to wait for, once each, in order."""
        return [i for i in dict.fromkeys(self.ids) if i not in self._records]

    def add(self, rows: Iterable[dict[str, Any]]) -> bool:
        """Keep the finished ones among ``rows``; True when more have finished (report progress)."""
        before = self.count
        for row in rows:
            if row["state"] in FINISHED_VALUES:
                self._records[row["task_id"]] = task_record(row)
        return self.count > before

    def records(self) -> list[dict[str, Any]]:
        """Every record, in the order of the given ids."""
        return [self._records[i] for i in self.ids]

    def timeout_error(self) -> WaitTimeoutError:
        return WaitTimeoutError(f"{self.total - self.count} of {self.total} task(s) "
                                f"unfinished after {self.timeout} s")
