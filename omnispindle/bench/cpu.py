"""``omnispindle bench cpu``: CPU-bound tasks through ``omnispindle worker --processes N``.

Each task spins a pure-Python loop of about ``TASK_MS`` milliseconds, so one
interpreter runs one at a time whatever its concurrency; the figures show how
the drain rate grows with the worker's processes, up to the machine's cores.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from omnispindle.bench import queries as bq
from omnispindle.bench.executors import spin
from omnispindle.bench.throughput import median_of, timed_drain
from omnispindle.bench.workflows import stop_processes, wait_for, worker_process
from omnispindle.task_queue import TaskQueue

CPU_TYPE = "bench_cpu"
TASK_MS = 5.0
TARGET_SPEEDUP_2 = 1.8  # two processes against one, on a machine with two idle cores
_CALIBRATION_LOOPS = 200_000


def cpu(
    queue: TaskQueue,
    tasks: int = 600,
    processes: Sequence[int] = (1, 2),
    concurrency: int = 1,
    runs: int = 3,
    **_: Any,
) -> dict[str, Any]:
    """Tasks per second with each process count (medians of ``runs``), and each rate's
    ratio to one process's. One task at a time per process, as fits CPU-bound work:
    threads beside a spinning one only wait for the interpreter's lock."""
    loops = loops_per_task()
    rates: dict[int, float] = {}
    for count in processes:

        def measure(count: int = count) -> dict[str, float | None]:
            with supervised_workers(queue, count, concurrency):
                return {"tasks_per_s": drain_cpu(queue, tasks, loops)}

        rates[count] = median_of(runs, measure)["tasks_per_s"] or 0.0
    queue.db.run(bq.delete_type(CPU_TYPE))
    return {
        "system": "omnispindle",
        "scenario": "cpu",
        "tasks": tasks,
        "task_ms": TASK_MS,
        "concurrency": concurrency,
        **{f"tasks_per_s_{n}p": rate for n, rate in rates.items()},
        **speedups(rates),
    }


def speedups(rates: dict[int, float]) -> dict[str, Any]:
    """``x_Np``: each count's rate over one process's; ``met`` when two reach the target."""
    if not rates.get(1):
        return {}
    found: dict[str, Any] = {f"x_{n}p": rate / rates[1] for n, rate in rates.items() if n != 1}
    if "x_2p" in found:
        found["met"] = found["x_2p"] >= TARGET_SPEEDUP_2
    return found


def loops_per_task() -> int:
    """The loop steps that take about ``TASK_MS`` here (the fastest of five timings)."""
    fastest = min(_timed_spin(_CALIBRATION_LOOPS) for _ in range(5))
    return max(1, round(_CALIBRATION_LOOPS * TASK_MS / 1000 / fastest))


def _timed_spin(loops: int) -> float:
    started = time.perf_counter()
    spin(loops)
    return time.perf_counter() - started


@contextmanager
def supervised_workers(queue: TaskQueue, count: int, concurrency: int) -> Iterator[None]:
    """One ``omnispindle worker --processes COUNT``, returned once its processes registered."""
    name = f"bench-cpu-{uuid.uuid4().hex[:8]}"
    process = worker_process(queue.dsn, name, concurrency, 30.0, ["--processes", str(count)])
    try:
        wait_for(
            lambda: sum(w["name"].startswith(name) for w in queue.list_workers()) == count,
            60,
            "the benchmark workers' start",
        )
        yield
    finally:
        stop_processes([process])


def drain_cpu(queue: TaskQueue, tasks: int, loops: int) -> float:
    """Submit ``tasks`` due a little later, all at once for the workers; their drain rate."""
    return timed_drain(queue, [{"task_type": CPU_TYPE, "parameters": {"loops": loops}}] * tasks)
