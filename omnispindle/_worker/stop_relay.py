"""Carrying a stop asked by a signal handler to a thread of its own.

A Python signal handler runs in the main thread between two of its bytecodes,
maybe while that thread holds the lock of an Event it is waiting on. A handler
that sets that Event waits for its own thread, for ever. So a stop asked in
the thread running the worker writes a byte to a pipe, which takes no Python
lock, and the relay's thread sets the events.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

_NOW = b"n"  # a stop that hands running tasks back at once


class StopRelay:
    """A pipe and a thread that calls ``stop(now)`` for each byte written to it."""

    def __init__(self, stop: Callable[[bool], None]) -> None:
        self._reader, self._writer = os.pipe()
        self._thread = threading.Thread(
            target=self._relay, args=(stop,), name="omnispindle-stop", daemon=True
        )
        self._thread.start()

    def ask(self, now: bool = False) -> None:
        """Have ``stop(now)`` called soon. Safe in a signal handler of the thread that
        closes the relay: between two of its bytecodes, the pipe is open or marked closed."""
        writer = self._writer
        if writer >= 0:
            os.write(writer, _NOW if now else b"s")

    def close(self) -> None:
        """End the relay's thread (after the stops already asked)."""
        writer, self._writer = self._writer, -1
        os.close(writer)  # the relay reads the end of the pipe
        self._thread.join()

    def _relay(self, stop: Callable[[bool], None]) -> None:
        try:
            while asked := os.read(self._reader, 64):
                stop(_NOW in asked)
        finally:
            os.close(self._reader)
