"""Waiting in a coroutine: woken by notifications, bounded by a poll interval."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Awaitable, Callable, Iterable

from omnispindle._db.async_notifier import AsyncNotifier
from omnispindle._client.waiting import CheckPacer, next_pause


async def wait_until(done: Callable[[], Awaitable[bool]], notifier: AsyncNotifier,
                     channels: Iterable[str], deadline: float | None,
                     pacer: CheckPacer) -> bool:
    """Await ``done()`` after wake-ups on ``channels`` until it returns True or the deadline passes.

    Subscribes before the first check, so a task finishing between that check
    and the wait still wakes it. Without a notification it checks every poll
    interval; after one, once ``pacer`` allows. Returns False on timeout.
    """
    woken = notifier.subscribe(channels)
    try:
        while True:
            woken.clear()
            if await done():
                return True
            pacer.checked(time.monotonic())
            pause = next_pause(deadline, pacer.poll_interval)
            if pause is None:
                return False
            if await wait_event(woken, pause):
                await asyncio.sleep(pacer.hold(time.monotonic(), deadline))
    finally:
        notifier.unsubscribe(woken)


async def wait_event(event: asyncio.Event, timeout: float) -> bool:
    """Wait until ``event`` is set or ``timeout`` seconds pass; True if it was set."""
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(event.wait(), timeout)
    return event.is_set()
