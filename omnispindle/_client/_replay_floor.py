"""Where a wait's checks read, given a replica: never one behind the wait's start.

A replica shows the primary's past. A task that failed and was retried just
now is still failed there, for as long as the replica trails the retry: a
wait reading it would return that old record at once, as the retry's
outcome. So a wait notes where the primary's WAL ends as it starts, and its
checks read the primary until the replica has replayed that far. Replay goes
in order: from then on the replica shows nothing older than the wait's start.

Pure bookkeeping, shared by the blocking and the asyncio client: it says
which queries to run; each client runs them.
"""

from __future__ import annotations

from omnispindle._db import queries as q
from omnispindle._db.query import Query, then


class ReplayFloor:
    """The point of the primary's WAL a wait's replica must have replayed.

    Args:
        lagging: the checks read a replica; without one the floor is reached
            from the start and asks nothing.
    """

    def __init__(self, lagging: bool) -> None:
        self.reached = not lagging
        self._position: str | None = None

    def start(self) -> Query[str]:
        """The query, on the primary, that notes where its WAL ends as the wait starts."""
        return then(q.waiting.wal_position(), self._noted)

    def probe(self) -> Query[bool]:
        """The query, on the replica before a check, that tells whether it has
        replayed the wait's start (and, once True, the floor is reached)."""
        if self._position is None:
            raise RuntimeError("the wait's start was not noted")
        return then(q.waiting.replayed_to(self._position), self._replayed)

    def _noted(self, position: str) -> str:
        self._position = position
        return position

    def _replayed(self, replayed: bool) -> bool:
        self.reached = replayed
        return replayed
