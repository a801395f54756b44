"""The attempts a worker holds: each claimed task, its executor call, its deadline.

Plain bookkeeping without I/O: the loop asks it what is overdue, which
leases to renew, which outcomes end a held attempt, and tells it what the
database said.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from omnispindle._db.rows import StepRow
from omnispindle._worker._execution import Outcome
from omnispindle._worker._runners import Call
from omnispindle.context import TaskContext

NO_DEADLINE = float("inf")


@dataclass
class Claim:
    """One held attempt: the claimed row, its context and call, and when it must end."""

    row: StepRow
    context: TaskContext
    call: Call
    deadline: float = NO_DEADLINE
    cancel_seen_at: float | None = None

    @property
    def token(self) -> str:
        """The attempt's lease token."""
        return self.row["lease_token"]

    def abandoned(self) -> None:
        """Its call was given up on: nothing more is due from it. Its executor is told to
        stop (``cancelled``): one that checks must not run on, for ever or beside the
        task's next attempt, once a timeout, a lost lease or a stop ended its own."""
        self.deadline = NO_DEADLINE
        self.cancel_seen_at = None
        self.context.request_cancel()


class Claims:
    """The attempts held, by task id."""

    def __init__(self) -> None:
        self._held: dict[int, Claim] = {}

    def __len__(self) -> int:
        return len(self._held)

    def __iter__(self) -> Iterator[Claim]:
        return iter(list(self._held.values()))

    def add(self, claim: Claim) -> None:
        """Hold a new attempt."""
        self._held[claim.row["id"]] = claim

    def get(self, task_id: int) -> Claim | None:
        """The attempt held for a task, if any."""
        return self._held.get(task_id)

    def drop(self, task_id: int) -> Claim | None:
        """Stop holding a task's attempt; the attempt, if one was held."""
        return self._held.pop(task_id, None)

    def holds(self, outcome: Outcome) -> bool:
        """Whether ``outcome`` ends an attempt held now (not an abandoned, older one)."""
        claim = self._held.get(outcome.task_id)
        return claim is not None and claim.token == outcome.lease_token

    def free_slots(self, concurrency: int, ending: Iterable[Outcome] = ()) -> int:
        """Slots free once the held attempts among ``ending`` are stored."""
        return concurrency - len(self._held) + sum(map(self.holds, ending))

    def release(self, stored: Iterable[Outcome]) -> None:
        """Forget the attempts these stored outcomes ended; a late outcome of an
        abandoned attempt must not end a newer claim of the same task."""
        for outcome in stored:
            if self.holds(outcome):
                del self._held[outcome.task_id]

    def leases(self) -> tuple[list[int], list[str]]:
        """The ids and lease tokens of every held attempt."""
        return list(self._held), [claim.token for claim in self._held.values()]

    def overdue(self, now: float) -> list[Claim]:
        """Attempts past their deadline (a task's timeout)."""
        return [claim for claim in self._held.values() if claim.deadline <= now]

    def ask_to_stop(self, task_ids: Iterable[int], now: float) -> list[int]:
        """Mark these tasks' attempts cancelled; the ids not marked before."""
        asked = []
        for task_id in task_ids:
            claim = self._held.get(task_id)
            if claim is not None and not claim.context.cancelled:
                claim.context.request_cancel()
                claim.cancel_seen_at = now
                asked.append(task_id)
        return asked

    def ignoring_cancel(self, since: float) -> list[Claim]:
        """Attempts told to stop at ``since`` or before that still run."""
        return [
            claim
            for claim in self._held.values()
            if claim.cancel_seen_at is not None and claim.cancel_seen_at <= since
        ]

    def lose(self, still_held: Iterable[int]) -> list[Claim]:
        """Drop the attempts whose lease the database no longer has for us."""
        lost = set(self._held) - set(still_held)
        return [self._held.pop(task_id) for task_id in sorted(lost)]

    def next_deadline(self) -> float:
        """The earliest deadline of a held attempt."""
        return min((claim.deadline for claim in self._held.values()), default=NO_DEADLINE)
