"""How often a wait checks the database: woken by notifications, paced by their cost."""

from __future__ import annotations

import collections
import contextlib
import time
from collections.abc import Iterator

# The least a check waits for a pooled connection, even at the deadline: a pool
# refuses a wait of zero though a connection is ready, and the last check may
# still find the task finished.
LEAST_CONNECTION_WAIT = 0.5


class CheckPacer:
    """Spaces out the checks that notifications trigger.

    Every finishing statement notifies, hundreds of times a second while
    workers drain a queue. Rather than one query per notification, a check
    is followed by a quiet gap of ``FACTOR`` times the cost of its repeated
    part (measured with :meth:`timing`), within ``FLOOR`` and the poll
    interval, so checking takes a small share of the wait however many
    notifications arrive. As the unfinished tasks get fewer, checks get
    cheaper and closer together, so the last one is seen promptly. The cost
    is the least of the last few checks: a round trip slowed by a busy
    machine is noise, not work. Fetching records is left out: it is needed
    once, whatever the pace. The first check leaves no gap, so that a single
    task finishing just after it is seen at once.

    Args:
        poll_interval: the longest gap, and the pause between checks when
            no notification comes.
        paced: False leaves no gap at all: a wait on a handful of tasks
            checks at every notification, as a one-row query costs little
            and its caller wants the result at once.
    """

    FACTOR = 16.0
    FLOOR = 0.02

    def __init__(self, poll_interval: float, paced: bool = True) -> None:
        self.poll_interval = poll_interval
        self.paced = paced
        self._costs: collections.deque[float] = collections.deque(maxlen=3)
        self._checks = 0
        self._ready_at = float("-inf")

    @contextlib.contextmanager
    def timing(self) -> Iterator[None]:
        """Measure the repeated part of a check (its query for what has finished)."""
        started = time.monotonic()
        try:
            yield
        finally:
            self.measured(time.monotonic() - started)

    def measured(self, seconds: float) -> None:
        """Record what the repeated part of the latest check cost."""
        self._costs.append(seconds)

    def checked(self, now: float) -> None:
        """Record that a check ended at ``now`` (monotonic seconds)."""
        self._checks += 1
        if self.paced and self._checks > 1:
            cost = min(self._costs, default=0.0)
            gap = min(self.poll_interval, max(self.FLOOR, self.FACTOR * cost))
            self._ready_at = now + gap

    def hold(self, now: float, deadline: float | None) -> float:
        """Seconds to hold off before the next check (0: check now), never past ``deadline``."""
        ready_at = self._ready_at if deadline is None else min(self._ready_at, deadline)
        return max(0.0, ready_at - now)


class ReplayFollower:
    """With checks that read a replica: a wake-up whose check found the wait not
    done is followed by checks at growing gaps, from ``FIRST`` doubling up to the
    poll interval, since the replica may not yet have replayed what the
    notification announced. Without a replica it changes no pause.
    """

    FIRST = 0.005

    def __init__(self, lagging: bool, poll_interval: float) -> None:
        self.lagging = lagging
        self.poll_interval = poll_interval
        self._gap: float | None = None

    def pause(self, pause: float) -> float:
        """The pause before the next check: ``pause``, or less while following."""
        return pause if self._gap is None else min(pause, self._gap)

    def waited(self, woken: bool) -> None:
        """Record how the last pause ended: by a notification, or by its time."""
        if woken:
            self._gap = self.FIRST if self.lagging else None
        elif self._gap is not None:
            doubled = self._gap * 2
            self._gap = doubled if doubled < self.poll_interval else None


def next_pause(deadline: float | None, poll_interval: float) -> float | None:
    """Seconds to wait before the next check, or None once ``deadline`` has passed."""
    if deadline is None:
        return poll_interval
    remaining = deadline - time.monotonic()
    return None if remaining <= 0 else min(poll_interval, remaining)


def connection_wait(deadline: float | None) -> float | None:
    """Seconds a check may wait for a pooled connection: what is left until
    ``deadline`` (at least ``LEAST_CONNECTION_WAIT``), so that a wait during an
    outage ends at its deadline rather than the pool's timeout after it; None
    (the pool's timeout) for a wait without one."""
    if deadline is None:
        return None
    return max(deadline - time.monotonic(), LEAST_CONNECTION_WAIT)
