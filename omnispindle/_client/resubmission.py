"""Submitting at most once across lost replies.

A submit call whose connection fails may have committed or not: the error
alone cannot tell. So each call draws a key, and its statements record the
ids they insert under it (``omnispindle.submissions``, in the same
transaction). After such a failure the call looks its key up: found, those
ids are its answer; not found, it submits again under the same key, which the
database refuses to record twice (should the first try commit after all, the
second is refused and reads what the first recorded). A failure before
anything was sent (no connection within the pool's wait) is raised at once:
nothing can have committed.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from uuid import UUID

from omnispindle._db import queries as q
from omnispindle._db.async_pool import AsyncDatabase
from omnispindle._db.pool import Database
from omnispindle._db.query import Operation
from omnispindle._db.sqlstate import AlreadySubmitted
from omnispindle.errors import DatabaseUnavailableError

# Seconds a call keeps trying to learn what it committed, after a failure that
# may have come after its commit; past it, the outcome is reported unknown.
RETRY_WINDOW = 30.0
_FIRST_PAUSE = 0.05
_MAX_PAUSE = 1.0

Build = Callable[[UUID], Operation[list[int]]]


class _Window:
    """The retries of one call: raises when there is nothing left to learn."""

    def __init__(self, key: UUID) -> None:
        self.key = key
        self.deadline: float | None = None  # set once the outcome is in doubt
        self.pause = _FIRST_PAUSE

    def failed(self, exc: DatabaseUnavailableError) -> float:
        """The pause before the next try.

        Raises:
            DatabaseUnavailableError: nothing was sent and nothing is in doubt
                (``exc`` itself), or the window closed with the outcome unknown.
        """
        if self.deadline is None:
            if exc.unsent:
                raise exc
            self.deadline = time.monotonic() + RETRY_WINDOW
        if time.monotonic() > self.deadline:
            raise DatabaseUnavailableError(
                f"{exc}; whether the submission committed is unknown "
                f"(its key in the submissions table: {self.key})"
            ) from exc
        pause, self.pause = self.pause, min(self.pause * 2, _MAX_PAUSE)
        return pause


def submit_once(db: Database, build: Build) -> list[int]:
    """Run the submission ``build(key)`` makes; after a failure that may have come
    after its commit, return what it committed or submit again, never twice."""
    window = _Window(uuid.uuid4())
    while True:
        try:
            return db.run(build(window.key))
        except AlreadySubmitted:
            pass
        except DatabaseUnavailableError as exc:
            time.sleep(window.failed(exc))
        while True:
            try:
                found = db.run(q.tasks.submitted(window.key))
                break
            except DatabaseUnavailableError as exc:
                time.sleep(window.failed(exc))
        if found is not None:
            return found


async def submit_once_async(db: AsyncDatabase, build: Build) -> list[int]:
    """:func:`submit_once` for the asyncio client."""
    window = _Window(uuid.uuid4())
    while True:
        try:
            return await db.run(build(window.key))
        except AlreadySubmitted:
            pass
        except DatabaseUnavailableError as exc:
            await asyncio.sleep(window.failed(exc))
        while True:
            try:
                found = await db.run(q.tasks.submitted(window.key))
                break
            except DatabaseUnavailableError as exc:
                await asyncio.sleep(window.failed(exc))
        if found is not None:
            return found
