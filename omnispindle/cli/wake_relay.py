"""The supervisor's one LISTEN connection, relayed to its worker processes.

Each child gets the reading end of a pipe of its own; every ready or cancel
notification is written to all of them (see ``relayed_notifier``). A wake-up
is a hint: a child whose pipe is full misses it and finds the task at its
next poll, so a write never blocks the supervisor.
"""

from __future__ import annotations

import functools
import logging
import os
import select
import threading

from omnispindle._db.namespace import Namespace
from omnispindle._db.notifier import Notifier
from omnispindle._db.relayed_notifier import RELAYED, encode

log = logging.getLogger("omnispindle.cli")


class WakeRelay:
    """Listens on ``listen_dsn`` and writes each relayed notification to every pipe."""

    def __init__(self, listen_dsn: str, namespace: Namespace) -> None:
        self._pipes: set[int] = set()
        self._lock = threading.Lock()
        self._notifier = Notifier(listen_dsn, namespace=namespace)
        for channel in RELAYED:
            relay = functools.partial(self._relay, channel)
            self._notifier.subscribe(channel, relay, with_payload=True)

    def open_pipe(self) -> tuple[int, int]:
        """A new pipe: its reading end for a child, its writing end to :meth:`close_pipe` later."""
        reader, writer = os.pipe()
        os.set_blocking(writer, False)
        with self._lock:
            self._pipes.add(writer)
        return reader, writer

    def close_pipe(self, writer: int) -> None:
        """Stop writing to a child's pipe (it exited, or never started)."""
        with self._lock:
            if writer not in self._pipes:
                return
            self._pipes.discard(writer)
        os.close(writer)

    def close(self) -> None:
        """Stop listening and close every pipe."""
        self._notifier.close()
        with self._lock:
            pipes, self._pipes = self._pipes, set()
        for writer in pipes:
            os.close(writer)

    def _relay(self, channel: str, payload: str) -> None:
        line = encode(channel, payload)
        if len(line) > select.PIPE_BUF:  # a line longer may be cut: wake without the payload
            line = encode(channel, "")
        with self._lock:
            for writer in self._pipes:
                try:
                    os.write(writer, line)
                except BlockingIOError:  # a child not reading: it finds the task by polling
                    pass
                except OSError:  # the child is gone; its pipe closes when it is reaped
                    pass
