"""The task list's filters, read from the query string; a bad value is reported, not raised."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from starlette.datastructures import QueryParams

from omnispindle._db.queries.dashboard import TaskFilter
from omnispindle.states import TaskState

_AGE = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd]?)")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_AGE_SECONDS = 100 * 365 * 86400
MAX_TASK_ID = 2**63 - 1
STATES = [s.value for s in TaskState]


@dataclass
class ListRequest:
    """A parsed task list request: the filter, the page's cursor and what was wrong."""

    task_filter: TaskFilter
    before: int | None
    problems: list[str] = field(default_factory=list)


def age_seconds(text: str) -> float | None:
    """``90``, ``30s``, ``10m``, ``2h`` or ``1d`` in seconds; None for anything else."""
    match = _AGE.fullmatch(text.strip().lower())
    if match is None:
        return None
    seconds = float(match[1]) * _UNIT_SECONDS[match[2]]
    return seconds if math.isfinite(seconds) and seconds <= MAX_AGE_SECONDS else None


class _Reader:
    """Reads fields of a query string, noting each value it cannot use."""

    def __init__(self, params: QueryParams) -> None:
        self.params = params
        self.problems: list[str] = []

    def text(self, name: str) -> str | None:
        text = (self.params.get(name) or "").strip() or None
        # Postgres text cannot hold a NUL: the driver would refuse the statement.
        if text is not None and "\x00" in text:
            self._refuse(name, "text without a NUL character")
            return None
        return text

    def _refuse(self, name: str, why: str) -> None:
        self.problems.append(f"{name.replace('_', ' ')}: {why}")

    def state(self) -> str | None:
        state = self.text("state")
        if state is not None and state not in STATES:
            self._refuse("state", f"one of {', '.join(STATES)}")
            return None
        return state

    def whole(self, name: str, low: int, high: int) -> int | None:
        text = self.text(name)
        if text is None:
            return None
        try:
            number = int(text)
        except ValueError:
            number = low - 1
        if not low <= number <= high:
            self._refuse(name, f"a whole number from {low} to {high}")
            return None
        return number

    def age(self, name: str) -> float | None:
        text = self.text(name)
        if text is None:
            return None
        seconds = age_seconds(text)
        if seconds is None:
            self._refuse(name, "an age such as 90s, 10m, 2h or 1d")
        return seconds


def parse(params: QueryParams) -> ListRequest:
    """The filter and cursor of a task list's query string; empty fields match all."""
    read = _Reader(params)
    task_filter = TaskFilter(
        task_type=read.text("type"),
        state=read.state(),
        priority=read.whole("priority", -1000, 1000),
        older_than=read.age("older_than"),
        newer_than=read.age("newer_than"),
        worker=read.text("worker"),
        text=read.text("text"),
    )
    before = read.whole("before", 1, MAX_TASK_ID)
    return ListRequest(task_filter, before, read.problems)
