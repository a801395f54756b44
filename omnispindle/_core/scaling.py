"""When a pool grows or shrinks: a worker's executor slots, a supervisor's processes.

Pure and clock-free: the owner observes what it sees, with the time, and
gets the size to have. Growth and shrinking are paced apart so that a pool
does not flap: it grows in steps, each only after it has stayed short of
room for ``grow_after`` seconds, and shrinks only after some of its room
stayed unused for ``shrink_after`` seconds, to the most it used meanwhile.
"""

from __future__ import annotations

from dataclasses import dataclass

from omnispindle._core import defaults
from omnispindle._core.validation import int_in_range
from omnispindle.errors import ValidationError

NEVER = float("inf")


@dataclass(frozen=True)
class Bounds:
    """The sizes a pool may take, and the size it starts at."""

    low: int
    high: int
    start: int


def bounds(
    what: str,
    size: object,
    low: object,
    high: object,
    limits: tuple[int, int],
    *,
    options: bool = False,
) -> Bounds | None:
    """Check a pool's minimum and maximum against its fixed ``size``.

    None when neither is given (a fixed pool of ``size``). ``size``, when given
    with them, is where the pool starts; by default it starts at ``low``.
    Messages name ``min_WHAT``, or ``--min-WHAT`` with ``options``.

    Raises:
        ValidationError: only one of the pair, ``low`` above ``high``, a value out
            of ``limits``, or ``size`` outside the pair.
    """
    if low is None and high is None:
        return None
    name = f"--{what}" if options else what
    least_name, most_name = (
        f"--{end}-{what}" if options else f"{end}_{what}" for end in ("min", "max")
    )
    if low is None or high is None:
        given = least_name if high is None else most_name
        raise ValidationError(f"{least_name} and {most_name} go together: {given} was given alone")
    least = int_in_range(least_name, low, limits)
    most = int_in_range(most_name, high, limits)
    if least > most:
        raise ValidationError(f"{least_name} ({least}) must not be above {most_name} ({most})")
    start = least if size is None else int_in_range(name, size, limits)
    if not least <= start <= most:
        raise ValidationError(
            f"{name} ({start}) is where an auto-scaled pool starts: it must be from "
            f"{least_name} ({least}) to {most_name} ({most})"
        )
    return Bounds(least, most, start)


def grown(size: int, high: int) -> int:
    """One growth step: half as large again, at least one more, at most ``high``."""
    return min(high, size + max(1, size // 2))


class Scaler:
    """Decides a pool's size from what its owner observes.

    Args:
        limits: the pool's bounds and starting size.
        grow_after: seconds the pool must stay short of room before each step up.
        shrink_after: seconds some room must stay unused before the pool shrinks.
    """

    def __init__(
        self,
        limits: Bounds,
        grow_after: float = defaults.SCALE_UP_AFTER,
        shrink_after: float = defaults.SCALE_DOWN_AFTER,
    ) -> None:
        self.low, self.high, self.size = limits.low, limits.high, limits.start
        self.grow_after, self.shrink_after = grow_after, shrink_after
        self._short_since: float | None = None
        self._spare_since: float | None = None
        self._peak = 0  # the most in use since _spare_since

    def observe(self, now: float, busy: int, short: bool) -> int:
        """Take one observation; return the size to have from now on.

        Args:
            now: the time, in seconds of the owner's monotonic clock.
            busy: how much of the pool is in use.
            short: all of it is in use and more work waits for room.
        """
        self._note_short(now, short)
        self._note_spare(now, busy)
        if self._short_since is not None and now - self._short_since >= self.grow_after:
            return self._resize(grown(self.size, self.high))
        if self._spare_since is not None and now - self._spare_since >= self.shrink_after:
            return self._resize(max(self.low, self._peak))
        return self.size

    def next_decision(self) -> float:
        """The earliest time an observation could change the size (``NEVER`` if none)."""
        times = [NEVER]
        if self._short_since is not None:
            times.append(self._short_since + self.grow_after)
        if self._spare_since is not None:
            times.append(self._spare_since + self.shrink_after)
        return min(times)

    def _note_short(self, now: float, short: bool) -> None:
        if not short or self.size >= self.high:
            self._short_since = None
        elif self._short_since is None:
            self._short_since = now

    def _note_spare(self, now: float, busy: int) -> None:
        """Track the stretch of time with room unused, and the most used in it."""
        if busy >= self.size or self.size <= self.low:
            self._spare_since = None
        elif self._spare_since is None:
            self._spare_since, self._peak = now, busy
        else:
            self._peak = max(self._peak, busy)

    def _resize(self, size: int) -> int:
        """Take ``size``; the time short or spare starts counting afresh."""
        self.size = size
        self._short_since = None
        self._spare_since = None
        return size
