"""``omnispindle worker --processes N``: N worker processes, each restarted when it dies.

One interpreter runs one executor's Python at a time; CPU-bound executors
need processes. The supervisor runs none itself: it starts each child as the
same command line with ``--processes 1``, restarts one that exits on its own
(after a delay that doubles while children keep dying young), and on SIGTERM
or SIGINT passes the signal on and waits for every child's graceful stop.

On Linux each child asks the kernel for a SIGTERM when the supervisor dies
(``PR_SET_PDEATHSIG``), so a supervisor killed with SIGKILL leaves children
that stop gracefully; elsewhere they run on until stopped one by one.
"""

from __future__ import annotations

import ctypes
import logging
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import FrameType

from omnispindle.cli.exit_codes import EXIT_ERROR, EXIT_OK

log = logging.getLogger("omnispindle.cli")

MAX_PROCESSES = 64
FIRST_DELAY = 0.5  # seconds before restarting a child that died
LONGEST_DELAY = 10.0
LIVED_A_WHILE = 30.0  # a child that lived this long is restarted after FIRST_DELAY again
STOP_MARGIN = 15.0  # seconds past the worker's shutdown timeout for connections to close
_PR_SET_PDEATHSIG = 1  # from <sys/prctl.h>


@dataclass
class Backoff:
    """The delay before a restart: doubling from ``FIRST_DELAY`` to ``LONGEST_DELAY``
    while children die young, so that one crashing at start does not spin."""

    delay: float = FIRST_DELAY

    def next_delay(self, lived: float) -> float:
        """The delay before restarting a child that lived ``lived`` seconds."""
        if lived >= LIVED_A_WHILE:
            self.delay = FIRST_DELAY
        delay = self.delay
        self.delay = min(self.delay * 2, LONGEST_DELAY)
        return delay


@dataclass
class _Slot:
    """One of the N places a child runs in, with its current child if any."""

    command: list[str]
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    restart_at: float | None = None
    backoff: Backoff = field(default_factory=Backoff)


def child_command(argv: Sequence[str], slot: int, name: str | None) -> list[str]:
    """The command line of the child in ``slot`` (from 1): ``argv`` with ``--processes 1``
    in place of the count, and ``NAME-SLOT`` as its name when a name was given."""
    kept: list[str] = []
    skip_value = False
    for arg in argv:
        if skip_value:
            skip_value = False
        elif arg == "--processes":
            skip_value = True
        elif not arg.startswith("--processes="):
            kept.append(arg)
    # The last occurrence of an option wins, which also covers any abbreviation left above.
    named = ["--name", f"{name}-{slot}"] if name else []
    return [sys.executable, "-m", "omnispindle", *kept, "--processes", "1", *named]


def _parent_death_signal() -> Callable[[], None] | None:
    """A function for ``preexec_fn`` that has the kernel SIGTERM the child when this
    process dies; None where there is no ``prctl``."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def ask() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the supervisor died before the request took hold
            os.kill(os.getpid(), signal.SIGTERM)

    return ask


class Supervisor:
    """Keeps ``len(commands)`` children running until SIGTERM or SIGINT, then stops them."""

    def __init__(self, commands: Sequence[list[str]], stop_timeout: float) -> None:
        self.stop_timeout = stop_timeout
        self._slots = [_Slot(command) for command in commands]
        self._stop_signal: int | None = None
        self._preexec = _parent_death_signal()

    def run(self) -> int:
        """Start the children and supervise them; the exit code once all have stopped:
        0 when each stopped in time, 1 when one had to be killed."""
        wake = self._handle_signals()
        for slot in self._slots:
            self._start(slot)
        while self._stop_signal is None:
            select.select([wake], [], [], self._seconds_to_next_restart())
            _drain(wake)
            self._reap()
            self._restart_due()
        return self._stop_all(self._stop_signal)

    def _handle_signals(self) -> int:
        """Note SIGTERM and SIGINT; return a file that turns readable on each signal,
        SIGCHLD included (the interpreter writes to it: safer than locks in a handler)."""

        def request_stop(signum: int, _frame: FrameType | None) -> None:
            log.info("received %s; stopping %d processes", signal.Signals(signum).name, len(self))
            self._stop_signal = signum

        reader, writer = os.pipe()
        for end in (reader, writer):
            os.set_blocking(end, False)
        signal.set_wakeup_fd(writer)
        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
        signal.signal(signal.SIGCHLD, lambda _signum, _frame: None)
        return reader

    def __len__(self) -> int:
        return len(self._slots)

    def _start(self, slot: _Slot) -> None:
        # The supervisor runs no threads, so a function between fork and exec is safe here.
        slot.process = subprocess.Popen(slot.command, preexec_fn=self._preexec)  # noqa: PLW1509
        slot.started, slot.restart_at = time.monotonic(), None
        log.info("worker process %d started", slot.process.pid)

    def _reap(self) -> None:
        """Note each child that exited, and when to start its replacement."""
        for slot in self._slots:
            if slot.process is None or slot.process.poll() is None:
                continue
            delay = slot.backoff.next_delay(time.monotonic() - slot.started)
            log.warning(
                "worker process %d %s; restarting in %.1f s",
                slot.process.pid,
                how_it_ended(slot.process.returncode),
                delay,
            )
            slot.process, slot.restart_at = None, time.monotonic() + delay

    def _restart_due(self) -> None:
        now = time.monotonic()
        for slot in self._slots:
            if slot.restart_at is not None and slot.restart_at <= now:
                self._start(slot)

    def _seconds_to_next_restart(self) -> float | None:
        due = [slot.restart_at for slot in self._slots if slot.restart_at is not None]
        return max(0.0, min(due) - time.monotonic()) if due else None

    def _stop_all(self, signum: int) -> int:
        """Pass ``signum`` on to every child and wait for them; SIGKILL those still
        running after the stop timeout."""
        running = [slot.process for slot in self._slots if slot.process is not None]
        for process in running:
            if process.poll() is None:
                process.send_signal(signum)
        deadline = time.monotonic() + self.stop_timeout
        killed = False
        for process in running:
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                killed = True
            log.info("worker process %d %s", process.pid, how_it_ended(process.returncode))
        return EXIT_ERROR if killed else EXIT_OK


def _drain(reader: int) -> None:
    """Read what the signals wrote, so that the next wait blocks again."""
    try:
        while os.read(reader, 512):
            pass
    except BlockingIOError:
        pass


def how_it_ended(returncode: int) -> str:
    """``exited with code 3`` or ``killed by SIGKILL``, from a Popen return code."""
    if returncode >= 0:
        return f"exited with code {returncode}"
    try:
        return f"killed by {signal.Signals(-returncode).name}"
    except ValueError:
        return f"killed by signal {-returncode}"
