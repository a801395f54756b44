"""When the worker's loop must wake next, and why.

The loop sleeps until the first of: the next heartbeat, sweep or schedule
look, a held attempt's deadline, a retried or delayed task coming due, or
the poll interval; a notification or an outcome wakes it sooner.
"""

from __future__ import annotations

import heapq
import time
from collections import deque
from collections.abc import Iterable

NEVER = float("inf")
MAX_ANNOUNCED = 10_000  # due times kept; the soonest win


class Timers:
    """The loop's wake-up times, in ``time.monotonic()`` seconds.

    Args:
        poll_interval: the longest sleep, however quiet the queue.
    """

    def __init__(self, poll_interval: float) -> None:
        self.poll_interval = poll_interval
        self.heartbeat_at = 0.0
        self.sweep_at = NEVER
        self.schedule_at = NEVER
        self._due: list[float] = []  # when retried or delayed tasks become ready
        self._announced: deque[float] = deque(maxlen=MAX_ANNOUNCED)  # from the notifier thread
        self._database_ahead: float | None = None  # database epoch minus monotonic seconds

    def read_database_clock(self, epoch: float, answered: float) -> None:
        """The database's clock read ``epoch``, and its answer was back by ``answered``
        (``time.monotonic()``): due times are read by it, not by this host's clock,
        which may be minutes off.

        The clock was read somewhere in the round trip. Taking its end makes every
        due time late by at most the round trip, and never early: a wake before a
        task is due finds nothing and sleeps the poll interval.
        """
        self._database_ahead = epoch - answered

    def announce(self, due_epoch: float) -> None:
        """A submitted task becomes due at ``due_epoch`` (seconds since the epoch, by
        the database's clock); thread-safe.

        Kept to the ``MAX_ANNOUNCED`` soonest: any role may NOTIFY, and a missed
        announcement only costs a wait of up to the poll interval.
        """
        now = time.monotonic()
        ahead = self._database_ahead
        due = now + (due_epoch - time.time()) if ahead is None else due_epoch - ahead
        self._announced.append(max(now, due))

    def due_in(self, delays: Iterable[float], now: float) -> None:
        """Tasks become ready ``delays`` seconds from ``now`` (a retry this worker stored,
        whose announcement a worker without LISTEN, behind a pooler, never hears)."""
        for seconds in delays:
            heapq.heappush(self._due, now + seconds)

    def pause(self, now: float, next_deadline: float = NEVER) -> float:
        """Seconds to sleep from ``now``; ``next_deadline`` is the first attempt's."""
        while self._announced:
            heapq.heappush(self._due, self._announced.popleft())
        if len(self._due) > MAX_ANNOUNCED:
            self._due = heapq.nsmallest(MAX_ANNOUNCED, self._due)
        while self._due and self._due[0] <= now:
            heapq.heappop(self._due)
        wake = min(
            self.heartbeat_at,
            self.sweep_at,
            self.schedule_at,
            self._due[0] if self._due else NEVER,
            now + self.poll_interval,
            next_deadline,
        )
        return max(0.0, wake - now)
