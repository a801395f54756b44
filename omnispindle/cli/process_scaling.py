"""How many worker processes an auto-scaling supervisor runs, from the backlog it reads.

Each process takes ``per_process`` tasks at once (its maximum concurrency
when it scales its own pool). The processes the queue asks for are those
its running and ready tasks would fill; more than run now, and the pool is
short of room. It grows a process at a time, at most every
``PROCESS_SCALE_UP_AFTER`` seconds of such shortage, and shrinks once
processes stayed unneeded for the idle window. Pure: the supervisor reads,
this decides.
"""

from __future__ import annotations

import math

from omnispindle._core import defaults
from omnispindle._core.scaling import Bounds, Scaler


class ProcessScaling:
    """The supervisor's number of processes, decided from each backlog read.

    Args:
        limits: the least and most processes, and how many to start.
        per_process: tasks one process runs at once, at most.
        shrink_after: seconds processes must stay unneeded before some stop.
    """

    def __init__(self, limits: Bounds, per_process: int, shrink_after: float) -> None:
        self.scaler = Scaler(
            limits, grow_after=defaults.PROCESS_SCALE_UP_AFTER, shrink_after=shrink_after
        )
        self.per_process = per_process
        self.read_at = 0.0

    @property
    def size(self) -> int:
        """The processes to run now."""
        return self.scaler.size

    @property
    def limit(self) -> int:
        """The most ready tasks worth counting: beyond what the most processes take,
        a longer backlog changes nothing."""
        return self.scaler.high * self.per_process + 1

    def seconds_to_read(self, now: float) -> float:
        """Seconds until the next backlog read is due."""
        return max(0.0, self.read_at - now)

    def observe(self, now: float, ready: int, running: int) -> int:
        """The processes to run, now that ``ready`` tasks wait and ``running`` run."""
        self.read_at = now + defaults.PROCESS_BACKLOG_READ
        wanted = math.ceil((ready + running) / self.per_process)
        return self.scaler.observe(now, busy=min(wanted, self.size), short=wanted > self.size)

    def unread(self, now: float) -> None:
        """The read failed: try again when the next one is due, deciding nothing."""
        self.read_at = now + defaults.PROCESS_BACKLOG_READ
