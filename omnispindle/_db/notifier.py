"""One LISTEN connection per process, fanning notifications out to subscribers.

Workers subscribe to the ready and cancel channels, waiting clients to the
finished channel, streaming clients to the stream channel. After every
(re)connect all subscribers are woken too, because a
notification sent while the connection was down is lost for good: waking
turns that loss into one extra check instead of a wait of a poll interval.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable

import psycopg

from omnispindle._db.namespace import DEFAULT, Namespace
from omnispindle._db.queries import setup
from omnispindle.errors import first_line

# Channels by their default names; a queue in another schema has its own.
READY_CHANNEL = "omnispindle_ready"
FINISHED_CHANNEL = "omnispindle_finished"
CANCEL_CHANNEL = "omnispindle_cancel"
STREAM_CHANNEL = "omnispindle_stream"
CHANNELS = (READY_CHANNEL, FINISHED_CHANNEL, CANCEL_CHANNEL, STREAM_CHANNEL)

log = logging.getLogger("omnispindle.notifier")


class Notifier:
    """Background thread holding the process's LISTEN connection.

    Args:
        dsn: the database to listen on.
        max_backoff: longest pause, in seconds, between reconnect attempts.
        namespace: the queue's schema, whose channels it listens on.
    """

    def __init__(
        self, dsn: str, *, max_backoff: float = 5.0, namespace: Namespace = DEFAULT
    ) -> None:
        self._dsn = dsn
        self._namespace = namespace
        # The queue's name of each channel, to the default name subscribers use.
        self._channels = {namespace.channel(channel): channel for channel in CHANNELS}
        self._max_backoff = max_backoff
        self._subscribers: dict[int, tuple[str, Callable[..., None], bool]] = {}
        self._ids = itertools.count()
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None
        self.connected = threading.Event()

    def subscribe(
        self, channel: str, callback: Callable[..., None], *, with_payload: bool = False
    ) -> int:
        """Call ``callback()`` on each notification on ``channel``; returns a handle.

        With ``with_payload`` the callback receives the notification's payload
        (an empty string when woken by a reconnect).
        """
        if channel not in CHANNELS:
            raise ValueError(f"unknown channel {channel!r}")
        with self._lock:
            handle = next(self._ids)
            self._subscribers[handle] = (channel, callback, with_payload)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="omnispindle-notifier", daemon=True
                )
                self._thread.start()
        return handle

    def unsubscribe(self, handle: int) -> None:
        with self._lock:
            self._subscribers.pop(handle, None)

    def close(self) -> None:
        """Stop listening; returns once the thread has ended."""
        self._closing.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _wake(self, channel: str | None, payload: str = "") -> None:
        with self._lock:
            callbacks = [
                (cb, wants)
                for ch, cb, wants in self._subscribers.values()
                if channel is None or ch == channel
            ]
        for callback, wants_payload in callbacks:
            if wants_payload:
                callback(payload)
            else:
                callback()

    def _run(self) -> None:
        backoff = 0.05
        while not self._closing.is_set():
            try:
                self._listen()
                backoff = 0.05
            except psycopg.OperationalError as exc:
                self.connected.clear()
                if backoff == 0.05:
                    log.warning("LISTEN connection lost (%s); reconnecting", first_line(exc))
                self._closing.wait(backoff)
                backoff = min(backoff * 2, self._max_backoff)

    def _listen(self) -> None:
        with psycopg.connect(self._dsn, autocommit=True) as conn:
            for channel in CHANNELS:
                conn.execute(self._namespace.text(setup.listen(channel)))
            self.connected.set()
            self._wake(None)
            while not self._closing.is_set():
                for notification in conn.notifies(timeout=0.5):
                    named = self._channels.get(notification.channel)
                    if named is not None:
                        self._wake(named, notification.payload)
