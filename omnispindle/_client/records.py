"""What the sync and async clients share: task records, cancel outcomes, waiting accounts.

Pure functions and plain data only, so that both clients shape their answers
and count finished tasks identically; each does its own I/O.
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator, Sequence

from omnispindle._core import validation
from omnispindle.errors import TaskFailedError, TaskNotFoundError, WaitTimeoutError
from omnispindle.states import FINISHED_VALUES, TaskState

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


# Runs of consecutive ids shorter than this are sent id by id: the server
# walks a range at about the cost of several single-id lookups.
SHORT_RUN = 8
# Records fetched per get_tasks call, so that catching up on many finished
# tasks never holds more than this many raw rows at once.
RECORD_CHUNK = 2000
# While at most this many tasks are unfinished, a check fetches their records
# directly: one query instead of two, and no dearer than naming them.
FEW_LEFT = 16


def id_params(sorted_ids: Sequence[int]) -> dict[str, list[int]]:
    """Name ascending, distinct ids as ``{"ids", "lo", "hi"}``: long runs as ranges."""
    singles: list[int] = []
    lows: list[int] = []
    highs: list[int] = []
    for low, high in _runs(sorted_ids):
        if high - low + 1 >= SHORT_RUN:
            lows.append(low)
            highs.append(high)
        else:
            singles.extend(range(low, high + 1))
    return {"ids": singles, "lo": lows, "hi": highs}


def _runs(sorted_ids: Sequence[int]) -> Iterator[tuple[int, int]]:
    """``(first, last)`` of each run of consecutive ids."""
    low = previous = None
    for task_id in sorted_ids:
        if previous is None or task_id != previous + 1:
            if previous is not None:
                yield low, previous
            low = task_id
        previous = task_id
    if previous is not None:
        yield low, previous


class FinishedTasks:
    """The account of one wait: which of the given ids have finished, and their records.

    It holds the ids and the finished records only. A check runs
    :meth:`check`, whose rows go to :meth:`add`, then fetches the records of
    the newly finished in chunks (:meth:`fetches`).

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
        self._unfinished = sorted(set(self.ids))
        self.total = len(self._unfinished)
        self._records: dict[int, dict[str, Any]] = {}
        self._params: dict[str, list[int]] | None = None

    @property
    def count(self) -> int:
        """How many distinct tasks have finished."""
        return len(self._records)

    @property
    def done(self) -> bool:
        return self.count == self.total

    def id_params(self) -> dict[str, list[int]]:
        """Parameters naming the unfinished ids (``missing_task_ids``, ``finished_task_ids``)."""
        if self._params is None:
            # Rebuilt here rather than in add(), once per check instead of per chunk.
            self._unfinished = [i for i in self._unfinished if i not in self._records]
            self._params = id_params(self._unfinished)
        return self._params

    def check(self) -> tuple[str, dict[str, Any]]:
        """The statement finding newly finished tasks: their records when few are left, else ids."""
        params = self.id_params()
        if len(self._unfinished) <= FEW_LEFT:
            return "get_tasks", {"ids": self._unfinished, "finished_only": True}
        return "finished_task_ids", params

    def require_found(self, missing_rows: list[dict[str, Any]]) -> None:
        """Raise :class:`TaskNotFoundError` for the first given id in ``missing_task_ids`` rows."""
        missing = {row["task_id"] for row in missing_rows}
        for task_id in self.ids:
            if task_id in missing:
                raise TaskNotFoundError(f"no task with id {task_id}")

    def fetches(self, finished_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``get_tasks`` parameters fetching the records of newly finished tasks, a chunk each."""
        fresh = sorted(row["task_id"] for row in finished_rows
                       if row["task_id"] not in self._records)
        return [{"ids": fresh[i:i + RECORD_CHUNK], "finished_only": True}
                for i in range(0, len(fresh), RECORD_CHUNK)]

    def add(self, rows: Iterable[dict[str, Any]]) -> bool:
        """Keep the finished records among ``rows`` (rows of ids alone are skipped).

        Returns True when more have finished (report progress).
        """
        before = self.count
        for row in rows:
            if row.get("state") in FINISHED_VALUES:
                self._records[row["task_id"]] = task_record(row)
        if self.count == before:
            return False
        self._params = None
        return True

    def records(self) -> list[dict[str, Any]]:
        """Every record, in the order of the given ids."""
        return [self._records[i] for i in self.ids]

    def timeout_error(self) -> WaitTimeoutError:
        return WaitTimeoutError(f"{self.total - self.count} of {self.total} task(s) "
                                f"unfinished after {self.timeout} s")
