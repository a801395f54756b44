"""Which of a supervisor's children a notice of ready tasks wakes.

Waking every idle child at each notice has them all try a claim that one
wins: with a hundred children a start waited about 17 ms instead of 1. A
notice wakes one child instead, in turn; a child that filled its free slots
(more may be ready) or had none (it is busy) says so, and two more are woken
for it; one that found less than it could take says so too, and the wake-ups
stop there. A child silent for ``HOP_TIMEOUT`` counts as one that filled its
slots. No child is woken twice for one notice, so a cascade ends once every
child has been woken. Children poll as well, so a missed wake-up only delays.

A child that just found nothing waits ``IDLE_STEP_GAP`` before its next
prompted claim (its guard against a flood of notices), so one that said so
within that gap is woken only when no other is left to wake, and then the one
whose gap ends first.
"""

from __future__ import annotations

from omnispindle._core.defaults import IDLE_STEP_GAP

HOP_TIMEOUT = 0.05  # seconds a woken child has to say how its claim went
WIDEN = 2  # children woken for each one that filled its slots


class Cascade:
    """The wake-up order of the children, by their keys; pure bookkeeping, no I/O.

    Args:
        hop_timeout: seconds a woken child has to report before others are woken.
    """

    def __init__(self, hop_timeout: float = HOP_TIMEOUT) -> None:
        self.hop_timeout = hop_timeout
        self._order: list[int] = []
        self._turn = 0
        self._woken: set[int] = set()  # by the latest notice
        self._waiting: dict[int, float] = {}  # woken, not yet heard from: until when
        self._found_nothing: dict[int, float] = {}  # when each last said it found less

    def add(self, child: int) -> None:
        self._order.append(child)

    def remove(self, child: int) -> None:
        if child in self._order:
            self._order.remove(child)
        self._woken.discard(child)
        self._waiting.pop(child, None)
        self._found_nothing.pop(child, None)

    def notice(self, now: float) -> list[int]:
        """A notice of ready tasks: the child to wake first."""
        self._woken = set()
        return self._wake(1, now)

    def report(self, child: int, more: bool, now: float) -> list[int]:
        """What ``child`` said after its woken claim: the children to wake for it."""
        if self._waiting.pop(child, None) is None:
            return []  # not woken by a cascade (a poll's claim, a restart's)
        if not more:
            self._found_nothing[child] = now
            return []
        self._found_nothing.pop(child, None)
        return self._wake(WIDEN, now)

    def expired(self, now: float) -> list[int]:
        """The children to wake for those silent past their time."""
        late = [child for child, until in self._waiting.items() if until <= now]
        for child in late:
            del self._waiting[child]
        return self._wake(WIDEN * len(late), now) if late else []

    def next_deadline(self) -> float | None:
        """When the next silent child's time runs out, if one is awaited."""
        return min(self._waiting.values(), default=None)

    def _wake(self, count: int, now: float) -> list[int]:
        chosen: list[int] = []
        for _ in range(len(self._order) if count > 0 else 0):
            if len(chosen) == count:
                break
            child = self._order[self._turn % len(self._order)]
            self._turn += 1
            if child not in self._woken and not self._pacing(child, now):
                chosen.append(self._woke(child, now))
        # Then those still waiting out their gap, the one whose gap ends first first.
        pacing = sorted(
            (child for child in self._order if child not in self._woken),
            key=lambda child: self._found_nothing.get(child, float("-inf")),
        )
        chosen += [self._woke(child, now) for child in pacing[: count - len(chosen)]]
        return chosen

    def _woke(self, child: int, now: float) -> int:
        self._woken.add(child)
        self._waiting[child] = now + self.hop_timeout
        return child

    def _pacing(self, child: int, now: float) -> bool:
        """Whether ``child`` found nothing so lately that it waits before claiming again."""
        return now - self._found_nothing.get(child, float("-inf")) < IDLE_STEP_GAP
