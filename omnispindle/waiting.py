"""Waiting for tasks to finish: woken by notifications, bounded by a poll interval."""

from __future__ import annotations

import threading
import time
from typing import Callable

from .notifier import Notifier


def wait_until(done: Callable[[], bool], notifier: Notifier, channel: str,
               deadline: float | None, poll_interval: float) -> bool:
    """Call ``done()`` after each wake-up on ``channel`` until it returns True or the deadline passes.

    Subscribes before the first check, so a task finishing between that check
    and the wait still wakes it. Returns False on timeout.
    """
    woken = threading.Event()
    handle = notifier.subscribe(channel, woken.set)
    try:
        while True:
            woken.clear()
            if done():
                return True
            pause = next_pause(deadline, poll_interval)
            if pause is None:
                return False
            woken.wait(pause)
    finally:
        notifier.unsubscribe(handle)


def next_pause(deadline: float | None, poll_interval: float) -> float | None:
    """Seconds to wait before the next check, or None once ``deadline`` has passed."""
    if deadline is None:
        return poll_interval
    remaining = deadline - time.monotonic()
    return None if remaining <= 0 else min(poll_interval, remaining)
