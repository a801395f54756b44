"""Notifications a supervisor relays to its worker processes through pipes.

A fleet of worker processes each holding a LISTEN connection spends as many
server connections on hearing wake-ups as it has processes. Under
``omnispindle worker --processes N`` the supervisor listens once and writes
each notification on the ready and cancel channels, one JSON line each, to
a pipe per child; the child reads its pipe instead of listening, and after a
claim that a wake-up prompted it reports on a second pipe whether it filled
its free slots (``+``) or not (``-``), so that the supervisor wakes more
children only while there is work (see ``wake_cascade``). The other channels
(a wait in an executor, a stream) get a LISTEN connection of the child's own,
opened only if something subscribes to them.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable

from omnispindle._db.namespace import DEFAULT, Namespace
from omnispindle._db.notifier import CANCEL_CHANNEL, CHANNELS, READY_CHANNEL, Notifier
from omnispindle._db.subscribers import Subscribers

# The child's ends of its pipes, by file descriptor number, set by the supervisor.
WAKE_FD_VARIABLE = "OMNISPINDLE_WAKE_FD"
REPORT_FD_VARIABLE = "OMNISPINDLE_REPORT_FD"
RELAYED = (READY_CHANNEL, CANCEL_CHANNEL)
FILLED, NOT_FILLED = b"+", b"-"  # what a child reports after a prompted claim

log = logging.getLogger("omnispindle.notifier")


def encode(channel: str | None, payload: str) -> bytes:
    """One notification as a line of the pipe; ``channel`` None wakes every channel."""
    return json.dumps([channel, payload]).encode() + b"\n"


def decode(line: bytes) -> tuple[str | None, str]:
    """The channel and payload of a line :func:`encode` wrote."""
    channel, payload = json.loads(line)
    return channel, payload


class RelayedNotifier:
    """The ready and cancel notifications read from the pipe ``fd``; the other
    channels from a LISTEN connection on ``dsn``, opened on first use.

    Args:
        fd: the reading end of the supervisor's pipe.
        dsn: where the channels it does not relay are listened to (None: nowhere).
        namespace: the queue's schema.
        report_fd: the writing end of the pipe it reports its claims on, if any.
    """

    def __init__(
        self,
        fd: int,
        dsn: str | None,
        *,
        namespace: Namespace = DEFAULT,
        report_fd: int | None = None,
    ) -> None:
        self._report_fd = report_fd
        if report_fd is not None:
            os.set_blocking(report_fd, False)
        self._relayed = Subscribers()
        self._own = Notifier(dsn, namespace=namespace)
        self._handles: dict[int, tuple[bool, int]] = {}  # ours: (relayed?, its handle)
        self._lock = threading.Lock()
        self._next = 0
        self.connected = threading.Event()
        self.connected.set()
        self.backend_pid: int | None = None  # it has no LISTEN connection of the relay's
        self._reader = threading.Thread(
            target=self._read, args=(fd,), name="omnispindle-relay", daemon=True
        )
        self._reader.start()

    def subscribe(
        self, channel: str, callback: Callable[..., None], *, with_payload: bool = False
    ) -> int:
        """As ``Notifier.subscribe``."""
        if channel not in CHANNELS:
            raise ValueError(f"unknown channel {channel!r}")
        relayed = channel in RELAYED
        if relayed:
            inner = self._relayed.add(channel, callback, with_payload)
        else:
            inner = self._own.subscribe(channel, callback, with_payload=with_payload)
        with self._lock:
            self._next += 1
            self._handles[self._next] = (relayed, inner)
            return self._next

    def unsubscribe(self, handle: int) -> None:
        with self._lock:
            found = self._handles.pop(handle, None)
        if found is None:
            return
        relayed, inner = found
        if relayed:
            self._relayed.remove(inner)
        else:
            self._own.unsubscribe(inner)

    def subscriptions(self, channel: str) -> int:
        """How many subscriptions ``channel`` has now (for diagnostics and tests)."""
        if channel in RELAYED:
            return self._relayed.count(channel)
        return self._own.subscriptions(channel)

    def listens_on(self, channel: str) -> bool:
        """Whether ``channel`` is heard now: by the pipe, or by the LISTEN connection
        of the child's own (for diagnostics and tests)."""
        return channel in RELAYED or self._own.listens_on(channel)

    def claimed(self, filled: bool) -> None:
        """Tell the supervisor how a claim a wake-up prompted went: ``filled``, every
        free slot taken (or none was free), so more may be ready for others."""
        if self._report_fd is None:
            return
        try:
            os.write(self._report_fd, FILLED if filled else NOT_FILLED)
        except OSError:  # a full pipe or a gone supervisor: it would only widen a cascade
            pass

    def close(self) -> None:
        """Close the LISTEN connection of the channels not relayed, if one was opened."""
        self._own.close()

    def _read(self, fd: int) -> None:
        try:
            with os.fdopen(fd, "rb") as pipe:
                for line in pipe:
                    self._hear(line)
        finally:
            log.warning("the supervisor's relay of notifications ended; waking by poll interval")
            self.connected.clear()
            self._relayed.wake(None)

    def _hear(self, line: bytes) -> None:
        """Wake the subscribers of one line; a line that cannot be read wakes them all."""
        try:
            channel, payload = decode(line)
        except (ValueError, TypeError):
            channel, payload = None, ""
        self._relayed.wake(channel, payload)  # which keeps one subscriber's failure to itself
