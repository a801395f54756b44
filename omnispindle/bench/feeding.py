"""The feed of a steady run, ours or a peer's: tasks submitted in small batches at a
fixed offered rate, and the row of figures such a run reports."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from omnispindle.bench.workflows import BenchmarkError

FEED_EVERY_S = 0.01
SIZE_EVERY_S = 1.0
# How long after the feed's end a task may finish and still count as completed.
GRACE_S = 1.0


def check_steady(rate: float, seconds: float) -> None:
    """Refuse a steady run that would offer nothing."""
    if rate <= 0 or seconds <= 0:
        raise BenchmarkError(f"a steady run needs a rate and seconds above 0: {rate}, {seconds}")


def feed(
    submit: Callable[[int], None], rate: float, seconds: float, size: Callable[[], int]
) -> list[int]:
    """Every ``FEED_EVERY_S`` for ``seconds``, ``submit`` the tasks due by then at
    ``rate`` a second; ``size`` is read once a second and at the end."""
    sizes: list[int] = []
    submitted = 0
    started = time.monotonic()
    next_size = started
    while (elapsed := time.monotonic() - started) < seconds:
        due = int(rate * elapsed) - submitted
        if due > 0:
            submit(due)
            submitted += due
        if time.monotonic() >= next_size:
            sizes.append(size())
            next_size += SIZE_EVERY_S
        time.sleep(FEED_EVERY_S)  # the feed's pace: the tasks due by then go next
    sizes.append(size())
    return sizes


def steady_row(found: dict[str, Any]) -> dict[str, Any]:
    """Rates and delays from a steady run's counts, as the database saw them."""
    fed_seconds = max(found["fed_seconds"] or 0.0, FEED_EVERY_S)
    return {
        "tasks": found["tasks"],
        "offered_per_s": round(found["tasks"] / fed_seconds),
        "completed_per_s": round(found["finished_in_time"] / fed_seconds),
        "p50_ms": round(found["p50_ms"], 2),
        "p99_ms": round(found["p99_ms"], 2),
        "max_ms": round(found["max_ms"], 2),
    }


def size_row(sizes: list[int]) -> dict[str, float]:
    """The sizes a feed read, in MB: at the start, at most, at the end."""
    return {
        "table_mb_start": round(sizes[0] / 2**20, 1),
        "table_mb_max": round(max(sizes) / 2**20, 1),
        "table_mb_end": round(sizes[-1] / 2**20, 1),
    }
