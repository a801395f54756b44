"""``omnispindle worker --processes N``: N worker processes, each restarted when it dies.

One interpreter runs one executor's Python at a time; CPU-bound executors
need processes. The supervisor runs none itself: it starts each child as the
same command line with ``--processes 1``, restarts one that exits on its own
(after a delay that doubles while children keep dying young; one that could
not load its executors ends the supervisor instead), and on SIGTERM
or SIGINT (or SIGHUP) passes the signal on and waits for every child's graceful stop;
a second signal is passed on too, and stops the children at once.

With ``--min-processes`` and ``--max-processes`` it reads its children's
backlog every few seconds and adds a child, or stops idle ones with SIGTERM,
as ``process_scaling`` decides. A child running a task is not stopped: its
task would go back to the queue and start again elsewhere, while an idle
child stayed; it is stopped at a later read, once idle.

With a ``relay`` the supervisor holds the fleet's one LISTEN connection and
passes each wake-up on to its children (see ``wake_relay``); only the child in
slot 1 takes turns at maintenance (sweeping, periodic ticks), so that a fleet
of a hundred processes asks for the duties' leases once a second, not a
hundred times.

On Linux each child asks the kernel for a SIGTERM when the supervisor dies
(``PR_SET_PDEATHSIG``, see :func:`die_with_supervisor`), so a supervisor
killed with SIGKILL leaves children that stop gracefully; elsewhere they run
on until stopped one by one.
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
from typing import TYPE_CHECKING

from omnispindle._db.rows import ProcessBacklog
from omnispindle.cli.exit_codes import EXIT_CONFIG, EXIT_ERROR, EXIT_OK
from omnispindle.cli.process_scaling import ProcessScaling
from omnispindle.cli.signals import heeded_stop_signals

if TYPE_CHECKING:
    from omnispindle.cli.wake_relay import WakeRelay

log = logging.getLogger("omnispindle.cli")

MAX_PROCESSES = 128
FIRST_DELAY = 0.5  # seconds before restarting a child that died
LONGEST_DELAY = 10.0
LIVED_A_WHILE = 30.0  # a child that lived this long is restarted after FIRST_DELAY again
STOP_MARGIN = 15.0  # seconds past the worker's shutdown timeout for connections to close
_PR_SET_PDEATHSIG = 1  # from <sys/prctl.h>
# The supervisor's own options: a child runs one process, whatever they said.
_COUNT_OPTIONS = ("--processes", "--min-processes", "--max-processes")
# The supervisor's pid, set for its children: each asks to die with it.
SUPERVISOR_VARIABLE = "OMNISPINDLE_SUPERVISOR_PID"
# What every child but the first is told: maintenance is the first one's.
_NO_MAINTENANCE = ("--no-sweep", "--no-periodic")
ReadBacklog = Callable[[Sequence[int], int], ProcessBacklog | None]


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
    """One of the N places a child runs in (numbered from 1), with its current child if any."""

    number: int
    command: list[str]
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    restart_at: float | None = None
    backoff: Backoff = field(default_factory=Backoff)


def child_command(
    argv: Sequence[str], slot: int, name: str | None, scaled: bool = False
) -> list[str]:
    """The command line of the child in ``slot`` (from 1): ``argv`` with ``--processes 1``
    in place of the counts, and ``NAME-SLOT`` as its name when a name was given.

    ``scaled``: ``argv`` gave ``--min-processes`` and ``--max-processes``; the
    child is told 1 for both too, in case an abbreviation of them is left.
    Every child but the first is told ``--no-sweep --no-periodic``.
    """
    kept: list[str] = []
    skip_value = False
    for arg in argv:
        if skip_value:
            skip_value = False
        elif arg in _COUNT_OPTIONS:
            skip_value = True
        elif not arg.startswith(tuple(f"{option}=" for option in _COUNT_OPTIONS)):
            kept.append(arg)
    # The last occurrence of an option wins, which also covers any abbreviation left above.
    counts = ["--processes", "1"]
    if scaled:
        counts += ["--min-processes", "1", "--max-processes", "1"]
    named = ["--name", f"{name}-{slot}"] if name else []
    duties = [] if slot == 1 else list(_NO_MAINTENANCE)
    return [sys.executable, "-m", "omnispindle", *kept, *counts, *named, *duties]


def die_with_supervisor() -> None:
    """In a child: have the kernel SIGTERM this process when its supervisor dies.

    Asked by the child itself, once it runs (the supervisor's relay thread
    makes running code between fork and exec unsafe); a supervisor that died
    before the request took hold is noticed by the parent having changed. Does
    nothing outside a supervisor, or where there is no ``prctl``.
    """
    supervisor = os.environ.pop(SUPERVISOR_VARIABLE, None)
    if supervisor is None or not sys.platform.startswith("linux"):
        return
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return
    prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != int(supervisor):
        os.kill(os.getpid(), signal.SIGTERM)


@dataclass
class AutoScaling:
    """What an auto-scaling supervisor decides with, and how it reads the backlog."""

    decide: ProcessScaling
    read: ReadBacklog
    # Cancels a read under way, from the stop signal's handler: a read a lock
    # holds up would otherwise keep the signal from the children.
    cancel: Callable[[], None] = lambda: None


class Supervisor:
    """Keeps ``processes`` children running until SIGTERM or SIGINT, then stops them.

    Args:
        command_of: the command line of the child in a slot (from 1).
        processes: children to run (to start with, when auto-scaling).
        stop_timeout: seconds children get to stop before they are killed.
        scaling: grow and shrink the children from the backlog; None: a fixed number.
        relay: the LISTEN connection whose notifications go to every child; None:
            each child listens itself.
    """

    def __init__(
        self,
        command_of: Callable[[int], list[str]],
        processes: int,
        stop_timeout: float,
        scaling: AutoScaling | None = None,
        relay: WakeRelay | None = None,
    ) -> None:
        self.command_of = command_of
        self.stop_timeout = stop_timeout
        self.scaling = scaling
        self.relay = relay
        self._slots = [_Slot(n, command_of(n)) for n in range(1, processes + 1)]
        self._retiring: list[subprocess.Popen[bytes]] = []  # told to stop by scaling
        self._pipes: dict[int, int] = {}  # a child's pid: the relay's key of its pipes
        self._stop_signal: int | None = None
        self._unusable = False  # a child could not load its executors
        self._stopping: list[subprocess.Popen[bytes]] = []  # told to stop by a signal
        self._hurry_signal: int | None = None  # a second signal: stop at once

    def run(self) -> int:
        """Start the children and supervise them; the exit code once all have stopped:
        0 when each stopped in time, 1 when one had to be killed, ``EXIT_CONFIG`` when
        one could not load its executors (every restart would fail alike)."""
        wake = self._handle_signals()
        for slot in self._slots:
            self._start(slot)
        while self._stop_signal is None:
            select.select([wake], [], [], self._seconds_to_next())
            _drain(wake)
            self._reap()
            self._restart_due()
            self._scale_if_due()
        stopped = self._stop_all(self._stop_signal)
        return EXIT_CONFIG if self._unusable else stopped

    def _handle_signals(self) -> int:
        """Note SIGTERM, SIGINT and SIGHUP; return a file that turns readable on each signal,
        SIGCHLD included (the interpreter writes to it: safer than locks in a handler)."""

        def request_stop(signum: int, _frame: FrameType | None) -> None:
            self.heard(signum)

        reader, writer = os.pipe()
        for end in (reader, writer):
            os.set_blocking(end, False)
        signal.set_wakeup_fd(writer)
        for signum in heeded_stop_signals():
            signal.signal(signum, request_stop)
        signal.signal(signal.SIGCHLD, lambda _signum, _frame: None)
        return reader

    def heard(self, signum: int) -> None:
        """What a stop signal does: the first stops the children gracefully, any later
        one at once, even one heard before the children were told of the first."""
        name = signal.Signals(signum).name
        if self._stop_signal is None:
            log.info("received %s; stopping %d processes", name, len(self))
            self._stop_signal = signum
            if self.scaling is not None:
                self.scaling.cancel()
            return
        log.warning("received %s again; stopping now", name)
        self._hurry_signal = signum
        _signal_all(self._stopping, signum)

    def __len__(self) -> int:
        return len(self._slots) + len(self._retiring)

    def _start(self, slot: _Slot) -> None:
        # Each child in a session of its own: a Ctrl-C (or a closed terminal) reaches
        # it once, passed on by the supervisor, not also from the terminal, which it
        # would take for a second signal, one that stops it at once.
        env = {**os.environ, SUPERVISOR_VARIABLE: str(os.getpid())}
        if self.relay is None:
            slot.process = subprocess.Popen(slot.command, env=env, start_new_session=True)
        else:
            from omnispindle._db.relayed_notifier import REPORT_FD_VARIABLE, WAKE_FD_VARIABLE

            wake_reader, report_writer, key = self.relay.open_pipe()
            env[WAKE_FD_VARIABLE], env[REPORT_FD_VARIABLE] = str(wake_reader), str(report_writer)
            try:
                slot.process = subprocess.Popen(
                    slot.command,
                    env=env,
                    pass_fds=(wake_reader, report_writer),
                    start_new_session=True,
                )
            except BaseException:
                self.relay.close_pipe(key)
                raise
            finally:
                os.close(wake_reader)
                os.close(report_writer)
            self._pipes[slot.process.pid] = key
        slot.started, slot.restart_at = time.monotonic(), None
        log.info("worker process %d started", slot.process.pid)

    def _ended(self, process: subprocess.Popen[bytes]) -> None:
        """Close the pipe of a child that exited."""
        key = self._pipes.pop(process.pid, None)
        if key is not None and self.relay is not None:
            self.relay.close_pipe(key)

    def _retired(self, process: subprocess.Popen[bytes]) -> None:
        """A child that scaling stopped has exited: close its pipe, say how it ended."""
        self._ended(process)
        log.info("worker process %d %s", process.pid, how_it_ended(process.returncode))

    def _reap(self) -> None:
        """Note each child that exited, and when to start its replacement."""
        for process in [p for p in self._retiring if p.poll() is not None]:
            self._retiring.remove(process)
            self._retired(process)
        for slot in self._slots:
            if slot.process is None or slot.process.poll() is None:
                continue
            self._ended(slot.process)
            if slot.process.returncode == EXIT_CONFIG:
                self._give_up(slot)
                continue
            delay = slot.backoff.next_delay(time.monotonic() - slot.started)
            log.warning(
                "worker process %d %s; restarting in %.1f s",
                slot.process.pid,
                how_it_ended(slot.process.returncode),
                delay,
            )
            slot.process, slot.restart_at = None, time.monotonic() + delay

    def _give_up(self, slot: _Slot) -> None:
        """A child could not load its executors (its error is above): stop them all
        rather than restart children that would fail alike for ever."""
        assert slot.process is not None
        log.error(
            "worker process %d cannot load its executors; stopping %d processes",
            slot.process.pid,
            len(self),
        )
        slot.process = None
        self._unusable = True
        self._stop_signal = signal.SIGTERM

    def _restart_due(self) -> None:
        now = time.monotonic()
        for slot in self._slots:
            if slot.restart_at is not None and slot.restart_at <= now:
                self._start(slot)

    def _seconds_to_next(self) -> float | None:
        """Seconds until the next restart or backlog read; None: until a signal."""
        now = time.monotonic()
        due = [slot.restart_at - now for slot in self._slots if slot.restart_at is not None]
        if self.scaling is not None:
            due.append(self.scaling.decide.seconds_to_read(now))
        return max(0.0, min(due)) if due else None

    def _scale_if_due(self) -> None:
        """Read the backlog when due; start children up to the size it calls for, or
        stop idle ones down to it (busy ones stay until a later read finds them idle)."""
        scaling, now = self.scaling, time.monotonic()
        if scaling is None or scaling.decide.seconds_to_read(now) > 0:
            return
        pids = [slot.process.pid for slot in self._slots if slot.process is not None]
        backlog = scaling.read(pids, scaling.decide.limit)
        if backlog is None:
            scaling.decide.unread(now)
            return
        was = scaling.decide.size
        size = scaling.decide.observe(now, backlog["ready"], backlog["running"])
        if size != was:
            log.info(
                "scaling from %d to %d worker processes (%s%d ready, %d running)",
                was,
                size,
                "at least " if backlog["ready"] >= scaling.decide.limit else "",
                backlog["ready"],
                backlog["running"],
            )
        self._grow_to(size)
        for slot in spare_slots(self._slots, len(self._slots) - size, set(backlog["busy_pids"])):
            self._slots.remove(slot)
            self._retire(slot)

    def _grow_to(self, size: int) -> None:
        """Start children in new slots up to ``size``."""
        while len(self._slots) < size:
            number = free_number(self._slots)
            self._slots.append(_Slot(number, self.command_of(number)))
            self._start(self._slots[-1])

    def _retire(self, slot: _Slot) -> None:
        """Stop a slot's child gracefully (SIGTERM), or its restart if it is not running."""
        if slot.process is not None and slot.process.poll() is None:
            slot.process.send_signal(signal.SIGTERM)
            self._retiring.append(slot.process)
        elif slot.process is not None:  # it exited since the last reap
            self._retired(slot.process)

    def _stop_all(self, signum: int) -> int:
        """Pass ``signum`` on to every child and wait for them; SIGKILL those still
        running after the stop timeout."""
        running = [slot.process for slot in self._slots if slot.process is not None]
        running += self._retiring
        _signal_all(running, signum)
        self._stopping = running
        if self._hurry_signal is not None:  # heard before the children were told of the first
            _signal_all(running, self._hurry_signal)
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


def spare_slots(slots: Sequence[_Slot], count: int, busy: set[int]) -> list[_Slot]:
    """Up to ``count`` slots a scale-down may stop: those waiting for a restart, then
    those whose child runs no task (its pid not in ``busy``), the newest first.

    Never the first slot, whose child takes turns at maintenance for the host;
    never a busy child, whose task would be handed back and start over. Fewer
    than ``count`` when too few are idle.
    """
    idle = [
        slot
        for slot in slots
        if slot.number != 1 and (slot.process is None or slot.process.pid not in busy)
    ]
    idle.sort(key=lambda slot: (slot.process is not None, -slot.number))
    return idle[: max(count, 0)]


def free_number(slots: Sequence[_Slot]) -> int:
    """The lowest slot number not taken: a scale-down may have left a gap, and two
    children must not share a name (``NAME-3``)."""
    taken = {slot.number for slot in slots}
    return next(n for n in range(1, len(slots) + 2) if n not in taken)


def _signal_all(processes: Sequence[subprocess.Popen[bytes]], signum: int) -> None:
    """Send ``signum`` to each of ``processes`` still running."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signum)


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
