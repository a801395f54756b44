"""Stopping long-running commands cleanly on SIGTERM, SIGINT and SIGHUP."""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from types import FrameType

log = logging.getLogger("omnispindle.cli")

# SIGHUP too (a terminal closed, ``kill -HUP`` for a reload): by default it killed
# the process at once, its running tasks left to their leases and its row running.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT) + (
    (signal.SIGHUP,) if hasattr(signal, "SIGHUP") else ()
)


def heeded_stop_signals() -> tuple[int, ...]:
    """The stop signals this process heeds: SIGHUP not when it started ignored, as
    under ``nohup``, which is there so that a closed terminal does not stop it."""
    return tuple(
        signum
        for signum in STOP_SIGNALS
        if signum in (signal.SIGTERM, signal.SIGINT) or signal.getsignal(signum) != signal.SIG_IGN
    )


def on_stop_signals(
    stop: Callable[[], object], stop_now: Callable[[], object] | None = None
) -> None:
    """Call ``stop()`` on SIGTERM, SIGINT and SIGHUP, from a thread of its own; on
    each signal after the first, ``stop_now()`` if given (a second Ctrl-C stops at
    once, as users expect), else ``stop()`` again. Neither may block: the next
    signal is read once it returns.

    A Python signal handler runs in the main thread between two of its
    bytecodes, maybe while that thread holds a lock ``stop()`` needs (an
    Event's, in the middle of a wait), and would then wait for it forever. So
    the handler does nothing: the interpreter writes each signal's number to a
    pipe, and a watcher thread reads it and calls ``stop()``. Call this from
    the main thread, once per process.
    """
    reader, writer = os.pipe()
    os.set_blocking(writer, False)
    signal.set_wakeup_fd(writer)
    for signum in heeded_stop_signals():
        signal.signal(signum, _noted)
    # A process an executor forks must not inherit a handler that ignores the
    # signals, nor write them into this process's pipe.
    os.register_at_fork(after_in_child=_default_signals)
    threading.Thread(
        target=_watch,
        args=(reader, stop, stop_now or stop),
        name="omnispindle-signals",
        daemon=True,
    ).start()


def _noted(_signum: int, _frame: FrameType | None) -> None:
    """The handler: the wake-up pipe has the signal already."""


def _default_signals() -> None:
    try:
        signal.set_wakeup_fd(-1)
        for signum in heeded_stop_signals():  # one ignored stays ignored
            signal.signal(signum, signal.SIG_DFL)
    except ValueError:  # forked from a thread the child does not count as main
        pass


def _watch(reader: int, stop: Callable[[], object], stop_now: Callable[[], object]) -> None:
    heard = 0
    while True:
        for signum in os.read(reader, 64):
            if signum in STOP_SIGNALS:
                name = signal.Signals(signum).name
                heard += 1
                if heard > 1 and stop_now is not stop:
                    log.warning("received %s again; stopping now", name)
                else:
                    log.info("received %s; stopping", name)
                try:
                    (stop if heard == 1 else stop_now)()
                except Exception:  # the next signal must still be heard
                    log.exception("stopping failed")
