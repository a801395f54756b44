"""The supervisor's pure parts: its children's command lines and its restart delays."""

from __future__ import annotations

import sys

import pytest

from omnispindle.cli.supervisor import (
    FIRST_DELAY,
    LIVED_A_WHILE,
    LONGEST_DELAY,
    Backoff,
    child_command,
    how_it_ended,
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
    ]


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
