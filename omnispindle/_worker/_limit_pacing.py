"""How a worker paces its claims while its task types have limits.

The database enforces a type's limits inside each claim; a task they hold back
stays pending, and no notification says when room frees up (a running task
finishing, a token coming due). So a worker whose claim left slots empty tries
again soon: after one token's time for a rate, after ``RUNNING_RECHECK`` for a
running limit. Each claim in a row that finds nothing doubles that wait (the
poll interval caps it), so that an idle worker does not keep asking. Its rows
of limited types also stay out of its claim cursor, since they come from
passes of their own rather than from the walk.
"""

from __future__ import annotations

from collections.abc import Sequence

from omnispindle._db.rows import LimitOfType, StepRow

# The ready channel's payload from set_task_type_limit and clear_task_type_limit.
LIMITS_CHANGED = "limits"
RUNNING_RECHECK = 0.25  # seconds between claims while a running limit may hold tasks back
SHORTEST_RECHECK = 0.02  # the quickest retry, however high the rate
MOST_DOUBLINGS = 10  # enough to pass any poll interval


class LimitPacing:
    """The limits of a worker's task types, as last read; ``stale`` when they are to be
    read again (at start, at each heartbeat, and when a notification says they changed)."""

    def __init__(self) -> None:
        self.limited: frozenset[str] = frozenset()
        self.recheck: float | None = None
        self.stale = True
        self.empty_claims = 0  # claims in a row that found nothing

    def update(self, limits: Sequence[LimitOfType]) -> None:
        """Take the limits just read for this worker's task types."""
        self.stale = False
        self.limited = frozenset(limit["task_type"] for limit in limits)
        self.recheck = recheck_after(limits)

    def recheck_in(self, found: int) -> float | None:
        """Seconds until the next claim, after one that left slots empty and found
        ``found`` tasks; None without limits (the poll interval applies)."""
        if self.recheck is None:
            return None
        self.empty_claims = 0 if found else min(self.empty_claims + 1, MOST_DOUBLINGS)
        return float(self.recheck * 2.0**self.empty_claims)

    def walked(self, claimed: Sequence[StepRow]) -> list[StepRow]:
        """The claimed rows that came from the walk, not from a limited type's pass."""
        if not self.limited:
            return list(claimed)
        return [row for row in claimed if row["task_type"] not in self.limited]


def recheck_after(limits: Sequence[LimitOfType]) -> float | None:
    """Seconds until a claim that left slots empty should try again; None without limits."""
    waits = []
    for limit in limits:
        for rate in (limit["starts_per_second"], limit["starts_per_second_per_group"]):
            if rate is not None:
                waits.append(max(SHORTEST_RECHECK, 1.0 / rate))
        if limit["max_running"] is not None or limit["max_running_per_group"] is not None:
            waits.append(RUNNING_RECHECK)
    return min(waits, default=None)
