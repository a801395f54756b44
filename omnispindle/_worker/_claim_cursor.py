"""Where a worker's next claim starts in the ready index (see omnispindle.claim_tasks).

A claim from the head of the index steps over the entries of every task
claimed since vacuum last ran, and while any session holds an old snapshot
vacuum cannot remove them: each such claim slows as the snapshot ages. So a
worker claims from just past the last task it claimed, and walks from the
head only now and then (see ``rewalks``; every ``HEAD_WALK_MIN_S`` while
that is cheap), to find tasks that became ready behind its cursor (retries,
delayed tasks come due, submissions that committed late).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from omnispindle._core.rewalks import FACTOR, Rewalks
from omnispindle._db.rows import StepRow

HEAD_WALK_MIN_S = 0.05


class ClaimCursor:
    """The (priority, id) of the last task claimed, and when to walk from the head next."""

    def __init__(self, min_interval: float = HEAD_WALK_MIN_S, factor: float = FACTOR) -> None:
        self.head_walks = Rewalks(min_interval, factor)
        self.position: tuple[int, int] | None = None
        self._from_head = True

    def start(self) -> tuple[int | None, int | None]:
        """Where the next claim starts: the cursor, or (None, None) for the head."""
        self._from_head = self.position is None or self.head_walks.due()
        if self._from_head or self.position is None:
            return None, None
        return self.position

    def head_walk_in(self) -> float | None:
        """Seconds until the next claim may walk from the head, if the last one
        did not: a notified claim from the cursor that found nothing may have
        missed a task behind it (a resumed type's, a submission that committed
        late), and an idle worker must not leave that to its poll interval."""
        if self._from_head:
            return None
        return max(0.0, self.head_walks.next_at - time.monotonic())

    def move(self, claimed: Sequence[StepRow], limit: int, seconds: float) -> None:
        """Follow a claim of up to ``limit`` tasks, started at ``start()``, that
        returned ``claimed`` and took ``seconds``."""
        last = _last_in_claim_order(claimed)
        if not self._from_head:
            self.position = last or self.position
            return
        self.head_walks.walked(seconds)
        if len(claimed) == limit or self.position is None:
            # A full claim may have left ready tasks before the old cursor.
            self.position = last or self.position
        elif last is not None:
            # A short one took everything ready up to the end of the index.
            self.position = max(self.position, last, key=_claim_order)


def _last_in_claim_order(claimed: Sequence[StepRow]) -> tuple[int, int] | None:
    if not claimed:
        return None
    lowest = min(row["priority"] for row in claimed)
    return lowest, max(row["id"] for row in claimed if row["priority"] == lowest)


def _claim_order(position: tuple[int, int]) -> tuple[int, int]:
    """Claims go by priority descending, then id."""
    priority, task_id = position
    return -priority, task_id
