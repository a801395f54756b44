"""When the owner of an index cursor walks the index from its start again.

Claims and prune batches follow cursors, so that they do not step over the
index entries of rows already handled, which vacuum cannot remove while an
old snapshot is held. A walk from the start still has to come now and then,
for what was left behind the cursor: at most every ``min_interval`` seconds,
and ``factor`` times as long apart as the last one took once such walks are
slow, so that they never take more than about 1/factor of the time.

A walk is timed from outside, so one that took long may have waited instead
(for a lock, for a pooler holding it through an outage, in a paused process):
the next is put off by the shorter of the last two walks, and a wait that
came once puts nothing off, where a slow index slows both.
"""

from __future__ import annotations

import time

FACTOR = 50.0


class Rewalks:
    """The schedule of walks from the start of one index."""

    def __init__(self, min_interval: float, factor: float = FACTOR) -> None:
        self.min_interval = min_interval
        self.factor = factor
        self.next_at = 0.0
        self._last = 0.0  # seconds the walk before the latest took

    def due(self) -> bool:
        return time.monotonic() >= self.next_at

    def walked(self, seconds: float) -> None:
        """A walk from the start just took ``seconds``."""
        taken, self._last = min(seconds, self._last), seconds
        self.next_at = time.monotonic() + max(self.min_interval, self.factor * taken)
