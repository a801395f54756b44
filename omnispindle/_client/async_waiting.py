"""Waiting for tasks to finish in a coroutine: the twin of :mod:`omnispindle._client.waiting`."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import Awaitable, Callable, Iterable

from omnispindle._client._batch_wait import FEW_LEFT, QUIET_POLLS, FinishedTasks
from omnispindle._client._pacing import CheckPacer, ReplayFollower, connection_wait, next_pause
from omnispindle._client._replay_floor import ReplayFloor
from omnispindle._db.async_notifier import AsyncNotifier
from omnispindle._db.async_pool import AsyncDatabase
from omnispindle._db.notifier import FINISHED_CHANNEL
from omnispindle._db.rows import TaskRecord
from omnispindle._db.task_notices import Wanted
from omnispindle.errors import DatabaseUnavailableError

# Called as progress(finished, total); it may be a coroutine function.
AsyncProgress = Callable[[int, int], object]


async def wait_for_batch(
    db: AsyncDatabase,
    notifier: AsyncNotifier,
    task_ids: Iterable[int],
    timeout: float | None,
    poll_interval: float,
    progress: AsyncProgress | None = None,
    reads: AsyncDatabase | None = None,
) -> list[TaskRecord]:
    """Wait until every task finishes; their records in the given order.

    ``reads``: a replica to check on, as in the blocking twin.

    Raises:
        ValidationError: an id or the timeout is invalid.
        TaskNotFoundError: an id does not exist, or its task is deleted
            (pruned) while waited for.
        WaitTimeoutError: some tasks had not finished within ``timeout``.
        DatabaseUnavailableError: the database was still unreachable at the timeout.
    """
    finished = FinishedTasks(task_ids, timeout, QUIET_POLLS * poll_interval)
    pacer = CheckPacer(poll_interval, paced=finished.total > FEW_LEFT)
    found_all = finished.done

    async def report() -> None:
        outcome = None if progress is None else progress(finished.count, finished.total)
        if inspect.isawaitable(outcome):
            await outcome

    async def collect() -> bool:
        nonlocal found_all
        if not found_all:  # inside the loop, so that an outage at the start is waited out
            await db.run(finished.require_found(), wait=connection_wait(deadline))
            if not floor.reached:
                await db.run(floor.start(), wait=connection_wait(deadline))
            found_all = True
        if finished.done:
            return True
        # The replica once it has replayed the wait's start (see ReplayFloor).
        source = (
            checked
            if floor.reached or await checked.run(floor.probe(), wait=connection_wait(deadline))
            else db
        )
        with pacer.timing():
            found = await source.run(finished.find(), wait=connection_wait(deadline))
        if finished.add(found):
            await report()
        for query in finished.fetches(found):
            if finished.add(await source.run(query, wait=connection_wait(deadline))):
                await report()
        if finished.recheck_due(found, time.monotonic()):  # a task deleted while waited for
            await db.run(finished.require_found(), wait=connection_wait(deadline))
        return finished.done

    checked = reads or db
    deadline = None if finished.timeout is None else time.monotonic() + finished.timeout
    lagging = checked is not db
    floor = ReplayFloor(lagging)
    channels = (FINISHED_CHANNEL,)
    if not await wait_until(
        collect, notifier, channels, deadline, pacer, wanted=finished.named_in, lagging=lagging
    ):
        raise finished.timeout_error()
    return finished.records()


async def wait_until(
    done: Callable[[], Awaitable[bool]],
    notifier: AsyncNotifier,
    channels: Iterable[str],
    deadline: float | None,
    pacer: CheckPacer,
    *,
    wanted: Wanted,
    lagging: bool = False,
) -> bool:
    """Await ``done()`` after wake-ups on ``channels`` until it returns True or the deadline passes.

    Subscribes before the first check, so a task finishing between that check
    and the wait still wakes it. Without a notification it checks every poll
    interval; after one, once ``pacer`` allows. Returns False on timeout. An
    unreachable database counts as not done, only notices that may concern
    the tasks ``wanted`` picks wake it, and ``lagging`` checks follow a
    replica's replay, as in the blocking twin.
    """
    woken = notifier.subscribe(channels, wanted)
    follower = ReplayFollower(lagging, pacer.poll_interval)
    try:
        while True:
            woken.clear()
            outage: DatabaseUnavailableError | None = None
            try:
                if await done():
                    return True
            except DatabaseUnavailableError as exc:
                outage = exc
            pacer.checked(time.monotonic())
            pause = next_pause(deadline, pacer.poll_interval)
            if pause is None:
                if outage is not None:
                    raise outage
                return False
            was_woken = await wait_event(woken, follower.pause(pause))
            follower.waited(was_woken)
            if was_woken:
                await asyncio.sleep(pacer.hold(time.monotonic(), deadline))
    finally:
        notifier.unsubscribe(woken)


async def wait_event(event: asyncio.Event, timeout: float) -> bool:
    """Wait until ``event`` is set or ``timeout`` seconds pass; True if it was set."""
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(event.wait(), timeout)
    return event.is_set()
