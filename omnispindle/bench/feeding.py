"""The feed of a steady run, ours or a peer's: tasks submitted in small batches at a
fixed offered rate, and the row of figures such a run reports."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from omnispindle.bench.workflows import BenchmarkError

FEED_EVERY_S = 0.01
SIZE_EVERY_S = 1.0
# How long after the feed's end a task may finish and still count as completed.
GRACE_S = 1.0


def check_steady(
    rate: float,
    seconds: float,
    depth: int | None = None,
    share: float | None = None,
    tasks: int = 1,
) -> None:
    """Refuse a steady run that would offer nothing, before anything is measured: one
    at a ``share`` of the drain (of ``tasks``), else one to a ``depth``, else at a ``rate``."""
    if not 0 < seconds < math.inf:
        raise BenchmarkError(f"a steady run needs a rate and seconds above 0: {rate}, {seconds}")
    if share is not None:
        if not 0 < share < math.inf or tasks < 1:
            raise BenchmarkError(
                "a steady run at a share of the drain needs a share above 0 and at least "
                f"one task to drain: {share}, {tasks}"
            )
        if depth is not None:
            raise BenchmarkError(
                "a steady run goes at a share of the drain or to a depth, not both"
            )
    elif depth is not None:
        if depth < 1:
            raise BenchmarkError(f"a steady run to a depth needs a depth of at least 1: {depth}")
    elif not 0 < rate < math.inf:
        raise BenchmarkError(f"a steady run needs a rate and seconds above 0: {rate}, {seconds}")


# How many tasks to submit now, given the seconds since the feed began and the
# tasks submitted so far.
Pace = Callable[[float, int], int]


def pace_of(rate: float, depth: int | None, waiting: Callable[[], int]) -> Pace:
    """At ``rate`` a second, or, given a ``depth``, to that many tasks ``waiting``."""
    return at_rate(rate) if depth is None else to_depth(depth, waiting)


def at_rate(rate: float) -> Pace:
    """The tasks due by now at ``rate`` a second."""
    return lambda elapsed, submitted: int(rate * elapsed) - submitted


def to_depth(depth: int, waiting: Callable[[], int]) -> Pace:
    """As many as bring the tasks ``waiting`` to start back up to ``depth``."""
    return lambda _elapsed, _submitted: depth - waiting()


@dataclass
class Fed:
    """What a feed submitted, the sizes it read and the WAL written meanwhile (bytes)."""

    submitted: int
    sizes: list[int]
    wal_written: int


def feed(
    submit: Callable[[int], None],
    pace: Pace,
    seconds: float,
    size: Callable[[], int],
    wal_position: Callable[[], int],
) -> Fed:
    """Every ``FEED_EVERY_S`` for ``seconds``, ``submit`` the tasks ``pace`` says are
    due; ``size`` is read once a second and at the end, ``wal_position`` at the
    start and at the end."""
    wal_from = wal_position()
    sizes: list[int] = []
    submitted = 0
    started = time.monotonic()
    next_size = started
    while (elapsed := time.monotonic() - started) < seconds:
        due = pace(elapsed, submitted)
        if due > 0:
            submit(due)
            submitted += due
        if time.monotonic() >= next_size:
            sizes.append(size())
            next_size += SIZE_EVERY_S
        time.sleep(FEED_EVERY_S)  # the feed's pace: the tasks due by then go next
    sizes.append(size())
    return Fed(submitted, sizes, wal_position() - wal_from)


def steady_row(found: dict[str, Any], fed: Fed) -> dict[str, Any]:
    """A steady run's row: rates and delays from its counts as the database saw
    them, then the sizes its feed read and the WAL the whole server wrote meanwhile
    (MB of 2**20 bytes)."""
    fed_seconds = max(found["fed_seconds"] or 0.0, FEED_EVERY_S)
    return {
        "tasks": found["tasks"],
        "offered_per_s": round(found["tasks"] / fed_seconds),
        "completed_per_s": round(found["finished_in_time"] / fed_seconds),
        "p50_ms": round(found["p50_ms"], 2),
        "p99_ms": round(found["p99_ms"], 2),
        "max_ms": round(found["max_ms"], 2),
        **size_row(fed.sizes),
        "wal_mb": round(fed.wal_written / 2**20, 1),
    }


def size_row(sizes: list[int]) -> dict[str, float]:
    """The sizes a feed read, in MB: at the start, at most, at the end."""
    return {
        "table_mb_start": round(sizes[0] / 2**20, 1),
        "table_mb_max": round(max(sizes) / 2**20, 1),
        "table_mb_end": round(sizes[-1] / 2**20, 1),
    }
