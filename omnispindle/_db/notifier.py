"""One LISTEN connection per process, fanning notifications out to subscribers.

Workers subscribe to the ready and cancel channels, waiting clients to the
finished channel, streaming clients to the stream channel. The connection
listens only on the channels subscribed to so far: every worker's step
notifies the finished channel, and a worker process woken by each of them
spent a tenth of its CPU on notifications nobody in it heeded. After every
(re)connect all subscribers are woken too, because a
notification sent while the connection was down is lost for good: waking
turns that loss into one extra check instead of a wait of a poll interval.
So are a channel's subscribers once it is first listened on.
A connection that goes silent is probed (see :mod:`listen_probe`), and an
outage is logged once when it starts and once when it ends.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Protocol

import psycopg

from omnispindle._db.connecting import connect
from omnispindle._db.listen_probe import PROBE_AFTER, PROBE_TIMEOUT, ListenerSilent, SilenceProbe
from omnispindle._db.namespace import DEFAULT, Namespace
from omnispindle._db.outages import Outage
from omnispindle._db.pool import execute
from omnispindle._db.queries import setup
from omnispindle._db.subscribers import Subscribers
from omnispindle.errors import DatabaseUnavailableError, first_line

# Channels by their default names; a queue in another schema has its own.
READY_CHANNEL = "omnispindle_ready"
FINISHED_CHANNEL = "omnispindle_finished"
CANCEL_CHANNEL = "omnispindle_cancel"
STREAM_CHANNEL = "omnispindle_stream"
CHANNELS = (READY_CHANNEL, FINISHED_CHANNEL, CANCEL_CHANNEL, STREAM_CHANNEL)
PROBE_CHANNEL = "omnispindle_probe"
FIRST_BACKOFF = 0.05
# Seconds the loop waits for notifications before it looks for channels
# subscribed to meanwhile and for a silence to probe.
HEARING_SLICE = 0.5
# The payload of the notice that has the loop look for channels subscribed to
# meanwhile at once, rather than at the end of its slice.
LISTEN_MORE = "listen"

log = logging.getLogger("omnispindle.notifier")


class Listens(Protocol):
    """What hears notifications for a queue: a ``Notifier``, or a relay of a supervisor's."""

    connected: threading.Event
    backend_pid: int | None  # of its LISTEN connection, while it has one

    def subscribe(
        self, channel: str, callback: Callable[..., None], *, with_payload: bool = False
    ) -> int: ...

    def unsubscribe(self, handle: int) -> None: ...

    def subscriptions(self, channel: str) -> int: ...

    def claimed(self, filled: bool) -> None: ...

    def close(self) -> None: ...


class Notifier:
    """Background thread holding the process's LISTEN connection.

    Args:
        dsn: the database to listen on, by a direct connection; None for none
            (behind a pooler, without a direct DSN): subscribers then wake
            only by their own poll intervals.
        max_backoff: longest pause, in seconds, between reconnect attempts.
        namespace: the queue's schema, whose channels it listens on.
        probe_after: seconds of silence before the connection is probed.
        probe_timeout: seconds a probe may take to come back before the
            connection counts as dead and is replaced.
        hearing_slice: seconds the loop waits for notifications before it
            looks for channels subscribed to meanwhile and for a silence.
    """

    def __init__(
        self,
        dsn: str | None,
        *,
        max_backoff: float = 5.0,
        namespace: Namespace = DEFAULT,
        probe_after: float = PROBE_AFTER,
        probe_timeout: float = PROBE_TIMEOUT,
        hearing_slice: float = HEARING_SLICE,
    ) -> None:
        self._dsn = dsn
        self._hearing_slice = hearing_slice
        self._namespace = namespace
        # The queue's name of each channel, to the default name subscribers use.
        self._channels = {namespace.channel(channel): channel for channel in CHANNELS}
        self._probe_timing = (probe_after, probe_timeout)
        self._max_backoff = max_backoff
        self.outage = Outage("the LISTEN connection", log)
        self.backend_pid: int | None = None  # of the listening connection, while there is one
        self._subscribers = Subscribers()
        # Default names of the channels subscribed to so far, listened on from
        # then on; and those the live connection listens on (None without one).
        self._wanted: set[str] = set()
        self._listened: set[str] | None = None
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None
        self.connected = threading.Event()

    def subscribe(
        self, channel: str, callback: Callable[..., None], *, with_payload: bool = False
    ) -> int:
        """Call ``callback()`` on each notification on ``channel``; returns a handle.

        With ``with_payload`` the callback receives the notification's payload
        (an empty string when woken by a reconnect, or once the channel is first
        listened on).
        """
        if channel not in CHANNELS:
            raise ValueError(f"unknown channel {channel!r}")
        handle = self._subscribers.add(channel, callback, with_payload)
        with self._lock:
            # A live connection waits for notifications: a notice of our own
            # has it listen on the new channel at once.
            listen_more = channel not in self._wanted and self._listened is not None
            self._wanted.add(channel)
            if self._thread is None and self._dsn is not None:
                self._thread = threading.Thread(
                    target=self._run, name="omnispindle-notifier", daemon=True
                )
                self._thread.start()
        if listen_more:
            threading.Thread(
                target=self._ask_to_listen_more, name="omnispindle-listen-more", daemon=True
            ).start()
        return handle

    def listens_on(self, channel: str) -> bool:
        """Whether the connection listens on ``channel`` now (for diagnostics and tests)."""
        with self._lock:
            return self._listened is not None and channel in self._listened

    def subscriptions(self, channel: str) -> int:
        """How many subscriptions ``channel`` has now (for diagnostics and tests)."""
        return self._subscribers.count(channel)

    def unsubscribe(self, handle: int) -> None:
        self._subscribers.remove(handle)

    def claimed(self, filled: bool) -> None:
        """How a claim a notice prompted went: nobody here to tell."""

    def close(self) -> None:
        """Stop listening; returns once the thread has ended. Every subscriber is
        woken, so that a wait still under way checks at once and learns that its
        queue was shut down, rather than at its next poll."""
        self.stop_soon()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._wake(None)

    def stop_soon(self) -> None:
        """Have the thread end and close its connection within its hearing slice,
        without waiting for it (for a queue collected without being shut down)."""
        self._closing.set()

    def _wake(self, channel: str | None, payload: str = "") -> None:
        self._subscribers.wake(channel, payload)

    def _run(self) -> None:
        backoff = FIRST_BACKOFF
        while not self._closing.is_set():
            try:
                self._listen()
            except (psycopg.Error, DatabaseUnavailableError, ListenerSilent) as exc:
                self.connected.clear()
                self.backend_pid = None
                if not self.outage.ongoing:  # the connection worked: start the backoff afresh
                    backoff = FIRST_BACKOFF
                self.outage.lost(exc)
                self._closing.wait(backoff)
                backoff = min(backoff * 2, self._max_backoff)

    def _listen(self) -> None:
        assert self._dsn is not None  # the thread runs only with a DSN
        with connect(self._dsn) as conn:
            with self._lock:
                self._listened = set()
            try:
                self._listen_on_wanted(conn)
                conn.execute(self._namespace.text(setup.listen(PROBE_CHANNEL)))
                self.backend_pid = conn.info.backend_pid
                self.outage.restored()
                self.connected.set()
                self._wake(None)
                self._hear(conn)
            finally:
                with self._lock:
                    self._listened = None

    def _hear(self, conn: psycopg.Connection[object]) -> None:
        """Wake the subscribers of each notification until closed, listening on
        the channels subscribed to meanwhile."""
        after, timeout = self._probe_timing
        probe = SilenceProbe(self._send_probe, after=after, timeout=timeout)
        while not self._closing.is_set():
            # Back after each packet of notifications (whole: leaving one partway
            # would drop the rest), so that the notice of a new subscription has
            # it listen at once.
            for notification in conn.notifies(timeout=self._hearing_slice, stop_after=1):
                probe.heard(notification.payload)
                named = self._channels.get(notification.channel)
                if named is not None:
                    self._wake(named, notification.payload)
            for channel in self._listen_on_wanted(conn):
                self._wake(channel)  # what was sent on it before went unheard
            probe.check()

    def _listen_on_wanted(self, conn: psycopg.Connection[object]) -> list[str]:
        """LISTEN on the channels subscribed to and not yet listened on; returns them."""
        with self._lock:
            assert self._listened is not None  # called on a live connection only
            fresh = sorted(self._wanted - self._listened)
        for channel in fresh:
            conn.execute(self._namespace.text(setup.listen(channel)))
        with self._lock:
            self._listened.update(fresh)
        return fresh

    def _ask_to_listen_more(self) -> None:
        """Have the listening loop, waiting for notifications, listen on a new channel
        at once; if the notice cannot be sent, it does at the end of its slice."""
        try:
            self._send_probe(LISTEN_MORE)
        except Exception as exc:  # noqa: BLE001 - the loop's own check covers it
            log.debug("could not wake the LISTEN connection: %s", first_line(exc))

    def _send_probe(self, token: str) -> None:
        assert self._dsn is not None
        with connect(self._dsn) as conn:
            execute(conn, setup.notify_probe(token), self._namespace)
