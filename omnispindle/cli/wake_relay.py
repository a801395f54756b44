"""The supervisor's one LISTEN connection, relayed to its worker processes.

Each child gets the reading end of a pipe of its own, on which the
supervisor writes notifications (see ``relayed_notifier``), and the writing
end of another, on which it says how a claim after a wake-up went. A notice
of ready tasks wakes the children one cascade at a time (see
``wake_cascade``); every other notice (a cancel, a task due later, changed
limits) goes to them all. A wake-up is a hint: a child whose pipe is full
misses it and finds the task at its next poll, so a write never blocks.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import select
import threading
import time
from collections.abc import Iterable

from omnispindle._db.namespace import Namespace
from omnispindle._db.notifier import READY_CHANNEL, Notifier
from omnispindle._db.relayed_notifier import FILLED, RELAYED, encode
from omnispindle.cli.wake_cascade import HOP_TIMEOUT, Cascade

log = logging.getLogger("omnispindle.cli")


class WakeRelay:
    """Listens on ``listen_dsn`` and relays each notification to the children's pipes.

    Args:
        hop_timeout: seconds a woken child has to report (see ``wake_cascade``).
    """

    def __init__(
        self, listen_dsn: str, namespace: Namespace, *, hop_timeout: float = HOP_TIMEOUT
    ) -> None:
        self._reports: dict[int, int] = {}  # a child's wake pipe (its key): its report pipe
        self._closed: list[int] = []  # fds to close once the report reader let go of them
        self._gone: set[int] = set()  # report pipes at their end (the child exited)
        self._cascade = Cascade(hop_timeout)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._poke_reader, self._poke_writer = os.pipe()
        self._reader = threading.Thread(
            target=self._read_reports, name="omnispindle-relay-reports", daemon=True
        )
        self._reader.start()
        self._notifier = Notifier(listen_dsn, namespace=namespace)
        for channel in RELAYED:
            relay = functools.partial(self._relay, channel)
            self._notifier.subscribe(channel, relay, with_payload=True)

    def listening(self) -> bool:
        """Whether its connection listens on every channel it relays (for diagnostics
        and tests)."""
        return all(self._notifier.listens_on(channel) for channel in RELAYED)

    def open_pipe(self) -> tuple[int, int, int]:
        """Pipes for a new child: the ends it keeps (the one it reads wake-ups from, the
        one it reports on) and the key to :meth:`close_pipe` them with later."""
        wake_reader, wake_writer = os.pipe()
        report_reader, report_writer = os.pipe()
        os.set_blocking(wake_writer, False)
        os.set_blocking(report_reader, False)
        with self._lock:
            self._reports[wake_writer] = report_reader
            self._cascade.add(wake_writer)
        self._poke()
        return wake_reader, report_writer, wake_writer

    def close_pipe(self, key: int) -> None:
        """Stop relaying to a child (it exited, or never started)."""
        with self._lock:
            report_reader = self._reports.pop(key, None)
            if report_reader is None:
                return
            self._cascade.remove(key)
            self._gone.discard(report_reader)
            self._closed += [key, report_reader]
        self._poke()

    def close(self) -> None:
        """Stop listening and close every pipe."""
        self._notifier.close()
        self._stopping.set()
        self._poke()
        self._reader.join(timeout=5)
        with self._lock:
            fds = [*self._reports, *self._reports.values(), *self._closed]
            self._reports, self._closed = {}, []
        for fd in (*fds, self._poke_reader, self._poke_writer):
            with contextlib.suppress(OSError):
                os.close(fd)

    def _relay(self, channel: str, payload: str) -> None:
        line = encode(channel, payload)
        if len(line) > select.PIPE_BUF:  # a line longer may be cut: wake without the payload
            line = encode(channel, "")
        with self._lock:
            if channel == READY_CHANNEL and not payload:
                targets: Iterable[int] = self._cascade.notice(time.monotonic())
            else:
                targets = list(self._reports)
            self._write(targets, line)

    def _write(self, keys: Iterable[int], line: bytes) -> None:
        """Write ``line`` to the wake pipes ``keys``; the caller holds the lock."""
        for key in keys:
            try:
                os.write(key, line)
            except BlockingIOError:  # a child not reading: it finds the task by polling
                pass
            except OSError:  # the child is gone; its pipe closes when it is reaped
                pass

    def _read_reports(self) -> None:
        """Hear the children's reports, and widen each cascade as they ask."""
        while not self._stopping.is_set():
            with self._lock:
                for fd in self._closed:
                    os.close(fd)
                self._closed = []
                by_fd = {
                    report: key for key, report in self._reports.items() if report not in self._gone
                }
                deadline = self._cascade.next_deadline()
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            readable, _, _ = select.select([self._poke_reader, *by_fd], [], [], timeout)
            for fd in readable:
                if fd == self._poke_reader:
                    os.read(fd, 512)
                else:
                    self._hear(by_fd[fd], fd)
            with self._lock:
                self._write(self._cascade.expired(time.monotonic()), encode(READY_CHANNEL, ""))

    def _hear(self, key: int, report_reader: int) -> None:
        """Read one child's reports: each ``+`` widens the cascade, each ``-`` ends its branch."""
        try:
            said = os.read(report_reader, 512)
        except (BlockingIOError, OSError):
            return
        with self._lock:
            if key not in self._reports:
                return
            if not said:  # the child exited: nothing more to read until it is reaped
                self._gone.add(report_reader)
            for mark in said:
                now = time.monotonic()
                woken = self._cascade.report(key, mark == FILLED[0], now)
                self._write(woken, encode(READY_CHANNEL, ""))

    def _poke(self) -> None:
        """Have the report reader look at the children again."""
        with contextlib.suppress(OSError):
            os.write(self._poke_writer, b".")
