"""Executors the benchmarks run in worker processes."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

HOLD_LIMIT_SECONDS = 600


def hold(task_data: dict[str, Any]) -> dict[str, Any]:
    """Runs until the file named in the parameters exists (at most ten minutes)."""
    marker = Path(task_data["parameters"]["marker"])
    deadline = time.monotonic() + HOLD_LIMIT_SECONDS
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return {"released": marker.exists()}


def spin(loops: int) -> int:
    """A pure-Python loop of ``loops`` steps: work that holds the interpreter's lock."""
    total = 0
    for step in range(loops):
        total += step % 7
    return total


def cpu(task_data: dict[str, Any]) -> dict[str, Any]:
    """Spins for the parameters' ``loops`` steps: a CPU-bound task."""
    return {"total": spin(int(task_data["parameters"]["loops"]))}


def noop(task_data: dict[str, Any]) -> dict[str, Any]:
    """Does nothing: what remains is the queue's own cost."""
    return {}


def nap(task_data: dict[str, Any]) -> dict[str, Any]:
    """Sleeps for the parameters' ``seconds``: a task that waits, as on I/O."""
    time.sleep(float(task_data["parameters"]["seconds"]))
    return {}


def stamp(task_data: dict[str, Any]) -> dict[str, Any]:
    """Returns when it started (epoch seconds), for enqueue-to-start latency."""
    return {"started": time.time()}


EXECUTORS = {
    "bench_hold": hold,
    "bench_noop": noop,
    "bench_stamp": stamp,
    "bench_cpu": cpu,
    "bench_nap": nap,
}
