"""The account of one wait on many tasks: which have finished, and their records.

Pure bookkeeping, shared by the blocking and the asyncio client: it says which
queries to run next and keeps what they return; each client runs them.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Iterator, Sequence

from omnispindle._client.records import task_record
from omnispindle._core import validation
from omnispindle._db import queries as q
from omnispindle._db.query import Query
from omnispindle._db.rows import TaskRecord
from omnispindle.errors import TaskNotFoundError, WaitTimeoutError
from omnispindle.states import FINISHED_VALUES

# Runs of consecutive ids shorter than this are sent id by id: the server
# walks a range at about the cost of several single-id lookups.
SHORT_RUN = 8
# Records fetched per get_tasks call, so that catching up on many finished
# tasks never holds more than this many raw rows at once.
RECORD_CHUNK = 2000
# While at most this many tasks are unfinished, a check fetches their records
# directly: one query instead of two, and no dearer than naming them.
FEW_LEFT = 16
# A wait that has seen no task finish for this many poll intervals asks again
# whether every task it waits for still exists (see FinishedTasks.recheck_due).
QUIET_POLLS = 10


class IdRanges(dict[str, list[int]]):
    """Ids named compactly: ``ids`` one by one, runs of consecutive ids as ``lo``..``hi``."""


def id_ranges(sorted_ids: Sequence[int]) -> IdRanges:
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
    return IdRanges(ids=singles, lo=lows, hi=highs)


def _runs(sorted_ids: Sequence[int]) -> Iterator[tuple[int, int]]:
    """``(first, last)`` of each run of consecutive ids."""
    low = previous = None
    for task_id in sorted_ids:
        if previous is None or task_id != previous + 1:
            if low is not None and previous is not None:
                yield low, previous
            low = task_id
        previous = task_id
    if low is not None and previous is not None:
        yield low, previous


class FinishedTasks:
    """The account of one wait: which of the given ids have finished, and their records.

    It holds the ids and the finished records only. A check runs :meth:`find`,
    hands its result to :meth:`add`, then runs :meth:`fetches` for the records
    of the newly finished, in chunks, each handed to :meth:`add`.

    Args:
        task_ids: the ids waited for, in the order results are returned
            (an id may repeat).
        timeout: seconds the wait may take, or None.
        recheck_after: seconds without a task finishing after which
            :meth:`recheck_due` asks again that every task exists.

    Raises:
        ValidationError: an id or the timeout is invalid.
    """

    def __init__(
        self, task_ids: Iterable[int], timeout: float | None, recheck_after: float = math.inf
    ) -> None:
        self.ids = [validation.task_id(i) for i in task_ids]
        self.timeout = validation.optional_positive_number("timeout", timeout)
        self.recheck_after = recheck_after
        self._unfinished = sorted(set(self.ids))
        self.total = len(self._unfinished)
        self._records: dict[int, TaskRecord] = {}
        self._ranges: IdRanges | None = None
        # Since when the count of finished tasks has stood still, and at what.
        self._quiet_since: float | None = None
        self._quiet_count = 0

    @property
    def count(self) -> int:
        """How many distinct tasks have finished."""
        return len(self._records)

    @property
    def done(self) -> bool:
        """Whether every task has finished."""
        return self.count == self.total

    def require_found(self) -> Query[None]:
        """A query that raises :class:`TaskNotFoundError` for the first given id without a task."""
        ranges = self._unfinished_ranges()
        query = q.waiting.missing_task_ids(ranges["ids"], ranges["lo"], ranges["hi"])
        read = query.read

        def raise_first_missing(found: list[dict[str, object]]) -> None:
            missing = set(read(found))
            for task_id in self.ids:
                if task_id in missing:
                    raise TaskNotFoundError(f"no task with id {task_id}")

        return Query(query.statement, query.params, raise_first_missing)

    def find(self) -> Query[list[TaskRecord] | list[int]]:
        """The query that finds the newly finished tasks: their records while few are
        left, else their ids (whose records :meth:`fetches` then gets)."""
        ranges = self._unfinished_ranges()
        if len(self._unfinished) <= FEW_LEFT:
            return q.tasks.get_tasks(self._unfinished, finished_only=True)
        return q.waiting.finished_task_ids(ranges["ids"], ranges["lo"], ranges["hi"])

    def fetches(self, found: list[TaskRecord] | list[int]) -> list[Query[list[TaskRecord]]]:
        """Queries fetching the records of the finished ids ``find`` returned, a chunk each."""
        fresh = sorted(i for i in found if isinstance(i, int) and i not in self._records)
        return [
            q.tasks.get_tasks(fresh[at : at + RECORD_CHUNK], finished_only=True)
            for at in range(0, len(fresh), RECORD_CHUNK)
        ]

    def add(self, found: list[TaskRecord] | list[int]) -> bool:
        """Keep the finished records among ``found`` (ids alone are skipped); True when
        more tasks have finished (report progress)."""
        before = self.count
        for record in found:
            if not isinstance(record, int) and record["state"] in FINISHED_VALUES:
                self._records[record["task_id"]] = task_record(record)
        if self.count == before:
            return False
        self._ranges = None
        return True

    def recheck_due(self, found: list[TaskRecord] | list[int], now: float) -> bool:
        """Whether to run :meth:`require_found` again after a check that ran
        :meth:`find` (which returned ``found``) and its :meth:`fetches`.

        A task is deleted while waited for when it is pruned, its history's
        partition is dropped, or someone deletes it: once :meth:`require_found`
        had seen it, the wait would wait for it until the timeout. So it asks
        again at once when an id ``find`` named as finished came back without
        its record (deleted in between), and when no task has finished for
        ``recheck_after`` seconds (deleted before a check saw it finish).
        """
        if self.done:
            return False
        if self._quiet_since is None or self.count != self._quiet_count:
            self._quiet_since, self._quiet_count = now, self.count
        lost = any(isinstance(i, int) and i not in self._records for i in found)
        if lost or now - self._quiet_since >= self.recheck_after:
            self._quiet_since = now
            return True
        return False

    def named_in(self, named: frozenset[int]) -> bool:
        """Whether a notice naming the ids ``named`` names a task this wait may still
        wait for. Safe from the notifier's thread: the sorted list it reads is
        replaced, never changed."""
        unfinished = self._unfinished
        if len(named) >= len(unfinished):
            return not named.isdisjoint(unfinished)
        for task_id in named:
            at = bisect.bisect_left(unfinished, task_id)
            if at < len(unfinished) and unfinished[at] == task_id:
                return True
        return False

    def records(self) -> list[TaskRecord]:
        """Every record, in the order of the given ids."""
        return [self._records[i] for i in self.ids]

    def timeout_error(self) -> WaitTimeoutError:
        """The error of a wait that ended before every task finished."""
        return WaitTimeoutError(
            f"{self.total - self.count} of {self.total} task(s) unfinished after {self.timeout} s"
        )

    def _unfinished_ranges(self) -> IdRanges:
        """The unfinished ids, named compactly; rebuilt once per check, not per chunk."""
        if self._ranges is None:
            self._unfinished = [i for i in self._unfinished if i not in self._records]
            self._ranges = id_ranges(self._unfinished)
        return self._ranges
