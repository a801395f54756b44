"""Fixtures shared by the fault suite's scenarios."""

from __future__ import annotations

import pytest


@pytest.fixture
def report(capsys):
    """Prints a scenario's figures past pytest's capture; fails it if a task was lost."""

    def show(figures) -> None:
        with capsys.disabled():
            print("\n" + figures.line() + "\n  " + figures.trace)
        assert figures.lost == 0, figures.line()

    return show


@pytest.fixture
def say(capsys):
    """Prints one more figure of a scenario past pytest's capture."""

    def show(line: str) -> None:
        with capsys.disabled():
            print(line)

    return show
