"""Where a worker's next claim starts in the ready index (see omnispindle.claim_tasks).

While claims fill every free slot, the next one starts past the last task
claimed instead of at the head of the index, so it does not step over the
entries of tasks already claimed: vacuum removes those, but not while any
session holds a snapshot older than them.
"""

from __future__ import annotations

import time
from typing import Any

# Longest a cursor is followed before a claim walks from the head again.
LIFETIME_S = 1.0


class ClaimCursor:
    """The (priority, id) of the last task claimed, while claims fill every slot."""

    def __init__(self, lifetime: float = LIFETIME_S) -> None:
        self.lifetime = lifetime
        self.position: tuple[int, int] | None = None
        self.expires = 0.0

    def start(self) -> tuple[int | None, int | None]:
        """Where the next claim starts; (None, None) is the head.

        A cursor is followed for at most ``lifetime`` seconds, so that tasks
        that became ready behind it (retries, delayed tasks come due) wait no
        longer than that while a backlog lasts.
        """
        if self.position is None or time.monotonic() >= self.expires:
            self.position = None
            return None, None
        return self.position

    def move(self, claimed: list[dict[str, Any]], limit: int) -> None:
        """Follow a claim of up to ``limit`` tasks that returned ``claimed``.

        A claim that came up short has walked from the head already: the
        cursor is dropped.
        """
        if len(claimed) < limit:
            self.position = None
            return
        if self.position is None:
            self.expires = time.monotonic() + self.lifetime
        # Claim order is priority descending, then id.
        lowest = min(row["priority"] for row in claimed)
        self.position = (lowest, max(row["id"] for row in claimed if row["priority"] == lowest))
