"""One async LISTEN connection per async client, waking its waiters.

The twin of :mod:`omnispindle.notifier` for an event loop: a task on the
client's loop holds the connection and sets the ``asyncio.Event`` of every
waiter subscribed to a channel that is notified. After every (re)connect all
waiters are woken, because a notification sent while the connection was down
is lost for good: waking turns that loss into one extra check. A connection
that goes silent is probed, as the blocking twin's is (see :mod:`listen_probe`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

import psycopg

from omnispindle._db.async_pool import execute
from omnispindle._db.connecting import connect_async
from omnispindle._db.listen_probe import PROBE_AFTER, PROBE_TIMEOUT, ListenerSilent, SilenceProbe
from omnispindle._db.namespace import DEFAULT, Namespace
from omnispindle._db.notifier import FINISHED_CHANNEL, PROBE_CHANNEL, STREAM_CHANNEL
from omnispindle._db.outages import Outage
from omnispindle._db.queries import setup
from omnispindle._db.task_notices import Wanted, concerns
from omnispindle.errors import DatabaseUnavailableError, first_line

# Clients wait for finished tasks and streamed partials; the other channels are the workers'.
_CHANNELS = (FINISHED_CHANNEL, STREAM_CHANNEL)
_FIRST_BACKOFF = 0.05

log = logging.getLogger("omnispindle.notifier")


class AsyncNotifier:
    """The LISTEN connection of one async client, started by the first subscription.

    Args:
        dsn: the database to listen on, by a direct connection; None for none,
            as in the blocking twin.
        max_backoff: longest pause, in seconds, between reconnect attempts.
        namespace: the queue's schema, whose channels it listens on.
        probe_after: seconds of silence before the connection is probed.
        probe_timeout: seconds a probe may take to come back before the
            connection is given up as dead.
    """

    def __init__(
        self,
        dsn: str | None,
        *,
        max_backoff: float = 5.0,
        namespace: Namespace = DEFAULT,
        probe_after: float = PROBE_AFTER,
        probe_timeout: float = PROBE_TIMEOUT,
    ) -> None:
        self._dsn = dsn
        self._probe_timing = (probe_after, probe_timeout)
        self.backend_pid: int | None = None  # of the listening connection, while there is one
        self._namespace = namespace
        # The queue's name of each channel, to the default name subscribers use.
        self._channels = {namespace.channel(channel): channel for channel in _CHANNELS}
        self.outage = Outage("the async LISTEN connection", log)
        self._max_backoff = max_backoff
        # Each waiter's channels, and which tasks' notices it wakes for (None: all).
        self._waiters: dict[asyncio.Event, tuple[frozenset[str], Wanted | None]] = {}
        self._task: asyncio.Task[None] | None = None
        self._probes: set[asyncio.Task[None]] = set()  # held, so that none is collected early
        self.connected = asyncio.Event()
        # Whether a subscription may start the LISTEN task: only while the
        # client is open, so that a wait before open() or after close() (which
        # fails at its first check) leaves no connection behind.
        self._open = False

    def open(self) -> None:
        """Let subscriptions start the LISTEN task (the client opened)."""
        self._open = True

    def subscribe(self, channels: Iterable[str], wanted: Wanted | None = None) -> asyncio.Event:
        """Return an event that is set on each notification on one of ``channels``;
        with ``wanted``, only on those that may concern the tasks it picks (see
        :mod:`task_notices`): a notice naming tasks wakes their waiters alone."""
        channels = frozenset(channels)
        unknown = channels - set(_CHANNELS)
        if unknown:
            raise ValueError(f"unknown channel(s) {sorted(unknown)}")
        event = asyncio.Event()
        self._waiters[event] = (channels, wanted)
        if self._open and self._dsn is not None and (self._task is None or self._task.done()):
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="omnispindle-async-notifier"
            )
        return event

    def subscriptions(self, channel: str) -> int:
        """How many waiters ``channel`` has now (for diagnostics and tests)."""
        return sum(1 for channels, _ in self._waiters.values() if channel in channels)

    def unsubscribe(self, event: asyncio.Event) -> None:
        self._waiters.pop(event, None)

    async def close(self) -> None:
        """Stop listening and close the connection; a later subscription starts
        nothing until :meth:`open`. Every waiter is woken, so that it checks at
        once and learns that its client was closed, rather than at its next poll."""
        self._open = False
        task, self._task = self._task, None
        # A task of another loop is let go: that loop, maybe closed, cannot be awaited here.
        if task is not None and task.get_loop() is asyncio.get_running_loop():
            task.cancel()
            # Collects the task's CancelledError, while a cancel of close() itself still raises.
            await asyncio.gather(task, return_exceptions=True)
        self.connected = asyncio.Event()  # a reopened client may run on another loop
        self._wake(None)

    def _wake(self, channel: str | None, payload: str = "") -> None:
        for event, (channels, wanted) in list(self._waiters.items()):
            if channel is None or (
                channel in channels and (wanted is None or concerns(payload, wanted))
            ):
                event.set()

    async def _run(self) -> None:
        assert self._dsn is not None  # the task runs only with a DSN
        failures = 0
        while True:
            try:
                async with await connect_async(self._dsn) as conn:
                    await self._listen(conn)
                    failures = 0
                    await self._hear(conn)
            except (psycopg.Error, DatabaseUnavailableError, ListenerSilent) as exc:
                self.connected.clear()
                self.backend_pid = None
                failures += 1
                self.outage.lost(exc)
                await asyncio.sleep(
                    min(_FIRST_BACKOFF * 2 ** min(failures - 1, 16), self._max_backoff)
                )

    async def _listen(self, conn: psycopg.AsyncConnection[object]) -> None:
        for channel in (*_CHANNELS, PROBE_CHANNEL):
            await conn.execute(self._namespace.text(setup.listen(channel)))
        self.backend_pid = conn.info.backend_pid
        self.outage.restored()
        self.connected.set()
        self._wake(None)

    async def _hear(self, conn: psycopg.AsyncConnection[object]) -> None:
        """Wake the waiters of each notification until the connection fails or,
        silent, does not hear its own probe."""
        after, timeout = self._probe_timing
        probe = SilenceProbe(self._send_probe_soon, after=after, timeout=timeout)
        while True:
            async for notification in conn.notifies(timeout=0.5):
                probe.heard(notification.payload)
                named = self._channels.get(notification.channel)
                if named is not None:
                    self._wake(named, notification.payload)
            probe.check()

    def _send_probe_soon(self, token: str) -> None:
        """Send the probe from a task of its own: the loop must not wait on a connect."""
        probing = asyncio.get_running_loop().create_task(self._send_probe(token))
        self._probes.add(probing)
        probing.add_done_callback(self._probes.discard)

    async def _send_probe(self, token: str) -> None:
        assert self._dsn is not None
        try:
            async with await connect_async(self._dsn) as conn:
                await execute(conn, setup.notify_probe(token), self._namespace)
        except (psycopg.Error, DatabaseUnavailableError) as exc:
            # Unanswered, the probe times out and the listener is replaced.
            log.debug("could not send a LISTEN probe: %s", first_line(exc))
