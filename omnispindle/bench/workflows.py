"""``omnispindle bench``: scenarios that measure the queue and print figures."""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omnispindle._core import defaults
from omnispindle._core.batches import entry
from omnispindle._db.namespace import SCHEMA_VARIABLE
from omnispindle.bench import queries as bq
from omnispindle.client import TaskQueueClient
from omnispindle.errors import OmnispindleError
from omnispindle.task_queue import TaskQueue
from omnispindle.worker import WorkerClient

DAG_CHAIN_LENGTH = 500
DAG_CONCURRENCY = 8
DAG_TARGET_PCT = 20.0
DAG_BATCH_TIMEOUT = 600.0
NOOP_TYPE = "bench_noop"


class BenchmarkError(OmnispindleError):
    """A benchmark could not reach the state it measures."""


def wait_for(
    condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.02
) -> None:
    """Poll ``condition`` until true; raise BenchmarkError naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise BenchmarkError(f"{what} did not happen within {timeout:g} s")
        time.sleep(interval)


def worker_process(
    dsn: str, name: str, concurrency: int, lease_timeout: float, extra: Sequence[str] = ()
) -> subprocess.Popen[bytes]:
    """A worker process with default settings but for its lease (and ``extra`` options),
    running the bench executors. The DSN goes by the environment: on a command
    line, its password would show in ``ps``."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "omnispindle",
            "--log-level",
            "ERROR",
            "worker",
            "--executors",
            "omnispindle.bench.executors",
            "--name",
            name,
            "--concurrency",
            str(concurrency),
            "--lease-timeout",
            str(lease_timeout),
            *extra,
        ],
        env={**os.environ, "OMNISPINDLE_DSN": dsn, SCHEMA_VARIABLE: defaults.SCHEMA},
    )


def recovery(queue: TaskQueue, tasks: int = 100, lease_timeout: float = 30.0) -> dict[str, Any]:
    """Seconds from SIGKILL of a worker holding ``tasks`` tasks until all run again elsewhere."""
    run_id = uuid.uuid4().hex[:8]
    doomed_name, rescuer_name = f"bench-doomed-{run_id}", f"bench-rescuer-{run_id}"
    ids: list[int] = []

    def running_on(name: str) -> int:
        return queue.db.run(bq.running_on_worker(name, ids))

    with tempfile.TemporaryDirectory() as scratch:
        marker = Path(scratch) / "release"
        doomed = worker_process(queue.dsn, doomed_name, tasks, lease_timeout)
        rescuer = None
        try:
            ids = TaskQueueClient(local_queue=queue).submit_batch(
                [{"task_type": "bench_hold", "parameters": {"marker": str(marker)}}] * tasks
            )
            wait_for(lambda: running_on(doomed_name) == tasks, 120, "claiming every task")
            rescuer = worker_process(queue.dsn, rescuer_name, tasks, lease_timeout)
            wait_for(
                lambda: any(w["name"] == rescuer_name for w in queue.list_workers()),
                60,
                "the rescuing worker's start",
            )
            doomed.send_signal(signal.SIGKILL)
            killed_at = time.monotonic()
            wait_for(lambda: running_on(rescuer_name) == tasks, lease_timeout * 3, "the rescue")
            seconds = time.monotonic() - killed_at
            marker.touch()
            TaskQueueClient(local_queue=queue).wait_for_batch(ids, timeout=120)
        finally:
            marker.touch()
            stop_processes([doomed, rescuer])
    return {
        "scenario": "recovery",
        "tasks": tasks,
        "lease_timeout_s": lease_timeout,
        "recovery_s": round(seconds, 2),
        "target_s": lease_timeout + 2,
        "met": seconds < lease_timeout + 2,
    }


def dag(
    queue: TaskQueue, tasks: int = 5000, lease_timeout: float = 30.0, runs: int = 3
) -> dict[str, Any]:
    """What dependencies cost: a fan-out/fan-in 1 -> ``tasks`` -> 1 and a chain of 500,
    each timed against as many independent tasks; every figure is the median of ``runs``."""
    if tasks < 1 or runs < 1:
        raise BenchmarkError(f"dag needs at least one task and one run, got {tasks} and {runs}")
    shapes = {
        "fan": fan_out_in(tasks),
        "fan_baseline": independent(tasks + 2),
        "chain": chain(DAG_CHAIN_LENGTH),
        "chain_baseline": independent(DAG_CHAIN_LENGTH),
    }
    with noop_worker(queue, lease_timeout):
        seconds = median_seconds(queue, shapes, runs)
    return {
        "scenario": "dag",
        "tasks": tasks,
        "chain": DAG_CHAIN_LENGTH,
        "runs": runs,
        **_dependency_cost("fan", seconds, edges=2 * tasks),
        **_dependency_cost("chain", seconds, edges=DAG_CHAIN_LENGTH - 1),
        "target_pct": DAG_TARGET_PCT,
        "met": seconds["fan"] < seconds["fan_baseline"] * (1 + DAG_TARGET_PCT / 100),
    }


def fan_out_in(width: int) -> list[dict[str, Any]]:
    """A root, ``width`` children of it, and one task depending on all of them."""
    middle = range(1, width + 1)
    return (
        [{"key": "root", "task_type": NOOP_TYPE}]
        + [{"task_type": NOOP_TYPE, "dependencies": ["root"]} for _ in middle]
        + [{"task_type": NOOP_TYPE, "dependencies": [entry(i) for i in middle]}]
    )


def chain(length: int) -> list[dict[str, Any]]:
    """``length`` tasks, each depending on the one before."""
    return [
        {"task_type": NOOP_TYPE, "dependencies": [entry(i - 1)] if i else []} for i in range(length)
    ]


def independent(count: int) -> list[dict[str, Any]]:
    """``count`` tasks without dependencies: the baseline a shape is compared with."""
    return [{"task_type": NOOP_TYPE}] * count


@contextmanager
def noop_worker(queue: TaskQueue, lease_timeout: float) -> Iterator[WorkerClient]:
    """An in-process worker whose executor does nothing, so that only the queue is timed."""
    worker = WorkerClient(
        local_queue=queue,
        concurrency=DAG_CONCURRENCY,
        lease_timeout=lease_timeout,
        name=f"bench-dag-{uuid.uuid4().hex[:8]}",
    )
    worker.register_task_executor(NOOP_TYPE, lambda task_data: {})
    thread = threading.Thread(target=worker.start, daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        worker.stop(timeout=60)
        thread.join(timeout=60)


def median_seconds(
    queue: TaskQueue, shapes: dict[str, list[dict[str, Any]]], runs: int
) -> dict[str, float]:
    """Median seconds each shape takes over ``runs`` runs, each from a vacuumed table."""
    client = TaskQueueClient(local_queue=queue)
    samples: dict[str, list[float]] = {name: [] for name in shapes}
    for run in range(runs):
        # Interleaved in alternating order, so that what drift remains affects every shape alike.
        names = list(shapes) if run % 2 == 0 else list(reversed(shapes))
        for name in names:
            queue.db.run(bq.vacuum_tasks())
            samples[name].append(time_batch(client, shapes[name]))
    return {name: statistics.median(values) for name, values in samples.items()}


def time_batch(client: TaskQueueClient, entries: list[dict[str, Any]]) -> float:
    """Seconds from submitting ``entries`` until every one of them has succeeded."""
    started = time.monotonic()
    tasks = client.wait_for_batch(client.submit_batch(entries), timeout=DAG_BATCH_TIMEOUT)
    seconds = time.monotonic() - started
    unfinished = [t for t in tasks if t["state"] != "succeeded"]
    if unfinished:
        raise BenchmarkError(
            f"{len(unfinished)} task(s) did not succeed, e.g. {unfinished[0]['task_id']}"
        )
    return seconds


def _dependency_cost(shape: str, seconds: dict[str, float], edges: int) -> dict[str, Any]:
    """The shape's time, its baseline's, the overhead and the cost of one edge."""
    with_edges, baseline = seconds[shape], seconds[f"{shape}_baseline"]
    return {
        f"{shape}_s": round(with_edges, 2),
        f"{shape}_baseline_s": round(baseline, 2),
        f"{shape}_overhead_pct": round((with_edges / baseline - 1) * 100, 1),
        f"{shape}_edge_us": round((with_edges - baseline) / edges * 1e6),
    }


def stop_processes(
    processes: Iterable[subprocess.Popen[bytes] | None], timeout: float = 60.0
) -> None:
    """SIGTERM each process, then SIGKILL what has not exited ``timeout`` seconds later."""
    running = [p for p in processes if p is not None]
    for process in running:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for process in running:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
