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
            pause = poll_interval
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                pause = min(pause, remaining)
            woken.wait(pause)
    finally:
        notifier.unsubscribe(handle)
