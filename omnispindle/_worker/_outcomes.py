"""Where finished attempts wait to be stored, and when the loop should store them.

Executor threads (and the event loop) drop outcomes here and wake the loop;
the loop alone takes them out. Tasks claimed together often end together, so
the loop lingers briefly for more: storing them with one statement costs one
commit instead of one each.
"""

from __future__ import annotations

import threading
import time
from collections import deque

from omnispindle._worker._execution import Outcome

# Longest wait for more outcomes before storing the ones at hand.
LINGER_S = 0.002


def enough(running: int) -> int:
    """Outcomes worth one statement without lingering: half of what runs."""
    return max(1, running // 2)


class Inbox:
    """Outcomes handed in by executors, thread-safe (a deque), taken by the loop.

    Args:
        wake: set to wake the loop.
    """

    def __init__(self, wake: threading.Event) -> None:
        self._outcomes: deque[Outcome] = deque()
        self._wake = wake
        self._enough = 1

    def running(self, count: int) -> None:
        """How many attempts run now (the loop tells it after each claim and store)."""
        self._enough = enough(count)

    def __len__(self) -> int:
        return len(self._outcomes)

    def put(self, outcome: Outcome) -> None:
        """Hand in an outcome (from any thread). The first wakes the loop, which
        lingers for more; enough of them wake it at once: fewer wake-ups, bigger batches."""
        self._outcomes.append(outcome)
        waiting = len(self._outcomes)
        if waiting == 1 or waiting == self._enough:
            self._wake.set()

    def put_back(self, outcomes: list[Outcome]) -> None:
        """Return taken outcomes to the front, in order (their storing failed)."""
        self._outcomes.extendleft(reversed(outcomes))

    def take(self) -> tuple[list[Outcome], list[Outcome]]:
        """Every waiting outcome, as (failed, succeeded)."""
        batch: list[Outcome] = []
        while self._outcomes:
            batch.append(self._outcomes.popleft())
        return [o for o in batch if not o.succeeded], [o for o in batch if o.succeeded]

    def linger(self, stopping: threading.Event) -> None:
        """Let outcomes gather for up to ``LINGER_S`` while others are about to arrive."""
        deadline = time.monotonic() + LINGER_S
        while 0 < len(self._outcomes) < self._enough and not stopping.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._wake.clear()
            if len(self._outcomes) >= self._enough:  # arrived while clearing
                return
            self._wake.wait(remaining)
