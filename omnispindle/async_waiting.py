"""Waiting in a coroutine: woken by notifications, bounded by a poll interval."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Awaitable, Callable, Iterable

from .async_notifier import AsyncNotifier
from .waiting import next_pause


async def wait_until(done: Callable[[], Awaitable[bool]], notifier: AsyncNotifier,
                     channels: Iterable[str], deadline: float | None,
                     poll_interval: float) -> bool:
    """Await ``done()`` after each wake-up on ``channels`` until it returns True or the deadline passes.

    Subscribes before the first check, so a task finishing between that check
    and the wait still wakes it. Returns False on timeout.
    """
    woken = notifier.subscribe(channels)
    try:
        while True:
            woken.clear()
            if await done():
                return True
            pause = next_pause(deadline, poll_interval)
            if pause is None:
                return False
            await wait_event(woken, pause)
    finally:
        notifier.unsubscribe(woken)


async def wait_event(event: asyncio.Event, timeout: float) -> None:
    """Wait until ``event`` is set or ``timeout`` seconds pass, whichever comes first."""
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(event.wait(), timeout)
