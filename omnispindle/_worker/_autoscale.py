"""An auto-scaled worker's pool size, from what its claims find.

The worker claims for its free slots only, so it cannot count the ready
backlog; it reads demand from its claims instead. A claim that fills every
free slot may have left more behind; two in a row while every slot is busy
mean the pool is short of room. One alone does not: a single long task
would otherwise grow every idle worker it lands on.
"""

from __future__ import annotations

from omnispindle._core.scaling import NEVER, Bounds, Scaler

FULL_CLAIMS = 2  # claims in a row that filled every free slot: more work is waiting


class PoolSize:
    """The executors an auto-scaled worker runs at once.

    Args:
        limits: its bounds and starting size.
        shrink_after: seconds some slots must stay idle before the pool shrinks.
    """

    def __init__(self, limits: Bounds, shrink_after: float) -> None:
        self.scaler = Scaler(limits, shrink_after=shrink_after)
        self.full_claims = 0
        self.wake_at = NEVER  # the next time a decision may be due, as last told

    @property
    def size(self) -> int:
        """The current size."""
        return self.scaler.size

    def claimed(self, free: int, got: int) -> None:
        """A claim for ``free`` slots (at least one) got ``got`` tasks."""
        self.full_claims = self.full_claims + 1 if got >= free else 0

    def observe(self, now: float, busy: int) -> int:
        """The size to have now that ``busy`` slots are in use."""
        short = busy >= self.size and self.full_claims >= FULL_CLAIMS
        return self.scaler.observe(now, busy, short)

    def new_wake(self) -> float | None:
        """When the loop should wake for the next decision, if that changed."""
        due = self.scaler.next_decision()
        if due == self.wake_at:
            return None
        self.wake_at = due
        return due if due < NEVER else None
