"""Who is told of a notification: callbacks by channel, shared by every kind of
notifier (a LISTEN connection of the process's own, or one relayed to it)."""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable

log = logging.getLogger("omnispindle.notifier")


class Subscribers:
    """Callbacks by channel; safe to change from any thread while another wakes them."""

    def __init__(self) -> None:
        self._callbacks: dict[int, tuple[str, Callable[..., None], bool]] = {}
        self._ids = itertools.count()
        self._lock = threading.Lock()

    def add(self, channel: str, callback: Callable[..., None], with_payload: bool) -> int:
        """Call ``callback()`` (or ``callback(payload)``) at each wake of ``channel``; a handle."""
        with self._lock:
            handle = next(self._ids)
            self._callbacks[handle] = (channel, callback, with_payload)
        return handle

    def remove(self, handle: int) -> None:
        with self._lock:
            self._callbacks.pop(handle, None)

    def count(self, channel: str) -> int:
        """How many subscriptions ``channel`` has now."""
        with self._lock:
            return sum(1 for ch, _, _ in self._callbacks.values() if ch == channel)

    def wake(self, channel: str | None, payload: str = "") -> None:
        """Call the callbacks of ``channel``, or of every channel when it is None
        (a reconnect: what was sent meanwhile is lost, so everyone checks)."""
        with self._lock:
            callbacks = [
                (cb, wants)
                for ch, cb, wants in self._callbacks.values()
                if channel is None or ch == channel
            ]
        for callback, wants_payload in callbacks:
            try:
                if wants_payload:
                    callback(payload)
                else:
                    callback()
            except Exception:  # one subscriber's failure must not end the listening for all
                log.exception("a subscriber of %s failed", channel or "every channel")
