"""The supervisor's pure parts: its children's command lines, its restart delays and
its number of processes."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest

from omnispindle._core.defaults import PROCESS_BACKLOG_READ, PROCESS_SCALE_UP_AFTER
from omnispindle._core.scaling import Bounds
from omnispindle.cli.process_scaling import ProcessScaling
from omnispindle.cli.supervisor import (
    FIRST_DELAY,
    LIVED_A_WHILE,
    LONGEST_DELAY,
    Backoff,
    _Slot,
    child_command,
    free_number,
    how_it_ended,
    spare_slots,
)

COMMON = [sys.executable, "-m", "omnispindle"]


@pytest.mark.parametrize(
    "argv",
    [
        ["worker", "--processes", "4", "--executors", "jobs"],
        ["worker", "--processes=4", "--executors", "jobs"],
        ["worker", "--executors", "jobs", "--processes", "4"],
    ],
)
def test_a_child_runs_the_same_command_as_one_process(argv):
    assert child_command(argv, 1, None) == [
        *COMMON,
        "worker",
        "--executors",
        "jobs",
        "--processes",
        "1",
    ]


def test_a_named_supervisor_numbers_its_children():
    argv = ["--log-level", "DEBUG", "worker", "--name", "render", "--processes", "2"]
    assert child_command(argv, 2, "render")[3:] == [
        "--log-level",
        "DEBUG",
        "worker",
        "--name",
        "render",
        "--processes",
        "1",
        "--name",
        "render-2",
        "--no-sweep",
        "--no-periodic",
    ]


def test_only_the_first_child_takes_turns_at_maintenance():
    argv = ["worker", "--processes", "3", "--executors", "jobs"]
    first, *others = (child_command(argv, slot, None) for slot in (1, 2, 3))
    assert "--no-sweep" not in first and "--no-periodic" not in first
    for command in others:
        assert command[-2:] == ["--no-sweep", "--no-periodic"]


def test_restart_delays_double_up_to_a_limit_and_reset_after_a_long_life():
    backoff = Backoff()
    delays = [backoff.next_delay(lived=0.1) for _ in range(8)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]
    assert (FIRST_DELAY, LONGEST_DELAY) == (delays[0], delays[-1])
    assert backoff.next_delay(lived=LIVED_A_WHILE) == FIRST_DELAY
    assert backoff.next_delay(lived=1.0) == 2 * FIRST_DELAY


def test_an_exit_is_told_by_code_or_signal():
    assert how_it_ended(3) == "exited with code 3"
    assert how_it_ended(-9) == "killed by SIGKILL"
    assert how_it_ended(-200) == "killed by signal 200"


def test_a_child_of_an_auto_scaling_supervisor_runs_one_process_whatever_was_abbreviated():
    argv = ["worker", "--min-processes", "1", "--max-processes=4", "--max-proc", "4", "-x"]
    assert child_command(argv, 3, None, scaled=True)[3:] == [
        "worker",
        "--max-proc",
        "4",
        "-x",
        "--processes",
        "1",
        "--min-processes",
        "1",
        "--max-processes",
        "1",
        "--no-sweep",
        "--no-periodic",
    ]


def processes(low=1, high=4, per_process=2):
    return ProcessScaling(Bounds(low, high, low), per_process, shrink_after=10.0)


def test_processes_grow_one_at_a_time_while_the_backlog_exceeds_what_they_take():
    scaling = processes()
    assert scaling.limit == 9  # past what four processes of two take, a count changes nothing
    assert scaling.observe(0.0, ready=1, running=2) == 1  # three tasks: more than one takes
    assert scaling.seconds_to_read(0.0) == PROCESS_BACKLOG_READ
    assert scaling.observe(PROCESS_SCALE_UP_AFTER, ready=9, running=2) == 2
    assert scaling.observe(PROCESS_SCALE_UP_AFTER + 2, ready=9, running=4) == 2


def test_a_backlog_processes_can_take_grows_nothing():
    scaling = processes()
    scaling.observe(0.0, ready=2, running=0)
    assert scaling.observe(PROCESS_SCALE_UP_AFTER * 2, ready=0, running=2) == 1


def test_processes_shrink_once_the_backlog_stayed_empty():
    scaling = ProcessScaling(Bounds(1, 4, 3), per_process=2, shrink_after=10.0)
    assert scaling.observe(0.0, ready=0, running=3) == 3  # two processes' worth
    assert scaling.observe(5.0, ready=0, running=0) == 3
    assert scaling.observe(10.0, ready=0, running=0) == 2
    assert scaling.observe(15.0, ready=0, running=0) == 2  # a new window from here
    assert scaling.observe(25.0, ready=0, running=0) == 1


def slots(*pids):
    """Slots numbered from 1, each with a child of that pid (None: waiting for a restart)."""
    return [
        _Slot(n, [], process=None if pid is None else SimpleNamespace(pid=pid))
        for n, pid in enumerate(pids, start=1)
    ]


def test_a_scale_down_stops_idle_children_newest_first_and_spares_busy_ones():
    first, second, third, fourth = slots(101, 102, 103, 104)
    assert spare_slots([first, second, third, fourth], 2, busy={104}) == [third, second]
    assert spare_slots([first, second, third, fourth], 3, busy={102, 104}) == [third]


def test_a_scale_down_never_stops_the_first_child_which_takes_turns_at_maintenance():
    first, second = slots(101, 102)
    assert spare_slots([first, second], 1, busy={102}) == []
    assert spare_slots([first, second], 1, busy=set()) == [second]


def test_a_scale_down_drops_a_restart_pending_before_any_running_child():
    first, second, third = slots(101, None, 103)
    assert spare_slots([first, second, third], 1, busy=set()) == [second]
    assert spare_slots([first, second, third], 0, busy=set()) == []


def test_a_new_child_takes_the_lowest_free_slot_number():
    first, second, third = slots(101, 102, 103)
    assert free_number([first, third]) == 2
    assert free_number([first, second, third]) == 4
    assert free_number([]) == 1
