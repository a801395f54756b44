"""``omnispindle bench`` scenarios for speed: drain, enqueue and latency.

Each runs ``runs`` times and reports medians. Workers are separate
``omnispindle worker`` processes running ``omnispindle.bench.executors``; CPU is
user plus system time from the kernel, of those processes and of every
process of the server when it runs on this machine (``None`` otherwise).
"""

from __future__ import annotations

import statistics
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Any

from omnispindle.bench import queries as bq
from omnispindle.bench.peers import medians, postgres_cpu_seconds, process_cpu_seconds
from omnispindle.bench.workflows import BenchmarkError, stop_processes, wait_for, worker_process
from omnispindle.client import TaskQueueClient
from omnispindle.task_queue import TaskQueue

NOOP_TYPE = "bench_noop"
STAMP_TYPE = "bench_stamp"
DRAIN_START_DELAY_S = 3.0
SINGLE_SHARE = 10
MIN_SINGLE = 1000
SINGLE_THREADS = 8
LATENCY_SAMPLES = 200
LATENCY_GAP_S = 0.01


def median_of(runs: int, measure: Callable[[], dict[str, float | None]]) -> dict[str, float | None]:
    """Run ``measure`` ``runs`` times; the median of each figure."""
    return medians([measure() for _ in range(checked_runs(runs))])


def checked_runs(runs: int) -> int:
    """``runs``, refused unless there is at least one."""
    if runs < 1:
        raise BenchmarkError(f"a benchmark needs at least one run, got {runs}")
    return runs


@contextmanager
def workers(
    queue: TaskQueue,
    count: int,
    concurrency: int,
    lease_timeout: float = 30.0,
    extra: Sequence[str] = (),
) -> Iterator[list[int]]:
    """``count`` idle worker processes (``extra`` options), registered and listening;
    yields their pids."""
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    processes = [
        worker_process(queue.dsn, f"{prefix}-{i}", concurrency, lease_timeout, extra)
        for i in range(count)
    ]
    try:
        wait_for(
            lambda: sum(w["name"].startswith(prefix) for w in queue.list_workers()) == count,
            60,
            "the benchmark workers' start",
        )
        yield [p.pid for p in processes]
    finally:
        stop_processes(processes)


def drain(
    queue: TaskQueue,
    tasks: int = 20_000,
    workers_count: int = 2,
    concurrency: int = 32,
    runs: int = 3,
    **_: Any,
) -> dict[str, Any]:
    """No-op tasks per second through ``workers_count`` processes, and the CPU they cost."""

    def measure() -> dict[str, float | None]:
        with workers(queue, workers_count, concurrency) as pids:
            return drain_once(queue, pids, tasks)

    figures = median_of(runs, measure)
    return {
        "system": "omnispindle",
        "scenario": "drain",
        "tasks": tasks,
        "workers": workers_count,
        "concurrency": concurrency,
        **figures,
    }


def drain_once(
    queue: TaskQueue, pids: list[int], tasks: int, groups: int = 0
) -> dict[str, float | None]:
    """Submit ``tasks`` due a little later, so the CPU of submitting is not counted
    (in ``groups`` groups taking turns, if any); time the drain."""
    queue.db.run(bq.vacuum_tasks())
    ids = submit_due_later(queue, noop_entries(range(tasks), groups))
    worker_cpu, pg_before = process_cpu_seconds(pids), postgres_cpu_seconds(queue.dsn)
    wait_for(lambda: drained(queue, ids[0], ids[-1]), 600, f"draining {tasks} tasks", interval=0.05)
    worker_cpu = process_cpu_seconds(pids) - worker_cpu
    pg_after = postgres_cpu_seconds(queue.dsn)
    span = queue.db.run(bq.span_seconds(ids[0], ids[-1]))
    return {
        "tasks_per_s": tasks / span,
        "worker_cpu_s_per_1k": worker_cpu * 1000 / tasks,
        "pg_cpu_s_per_1k": (
            None if pg_before is None or pg_after is None else (pg_after - pg_before) * 1000 / tasks
        ),
    }


def noop_entries(numbers: range, groups: int = 0, **fields: Any) -> list[dict[str, Any]]:
    """Batch entries of no-op tasks, one for each of ``numbers``, with ``fields``; in
    ``groups`` groups taking turns by number, if any."""
    return [
        {"task_type": NOOP_TYPE, **fields, **({"group_key": f"g{n % groups}"} if groups else {})}
        for n in numbers
    ]


def submit_due_later(queue: TaskQueue, entries: list[dict[str, Any]]) -> list[int]:
    """Submit ``entries`` due ``DRAIN_START_DELAY_S`` from now, all at once for the
    workers, so that the CPU of submitting them is outside a drain's timing."""
    run_at = datetime.now(timezone.utc) + timedelta(seconds=DRAIN_START_DELAY_S)
    ids = TaskQueueClient(local_queue=queue).submit_batch(
        [{**entry, "run_at": run_at} for entry in entries]
    )
    if datetime.now(timezone.utc) >= run_at:
        raise BenchmarkError(
            f"submitting {len(entries)} tasks took over {DRAIN_START_DELAY_S} s; use fewer"
        )
    return ids


def timed_drain(queue: TaskQueue, entries: list[dict[str, Any]]) -> float:
    """Tasks a second at which running workers drain ``entries``, submitted by
    ``submit_due_later`` into a vacuumed table."""
    queue.db.run(bq.vacuum_tasks())
    ids = submit_due_later(queue, entries)
    wait_for(
        lambda: drained(queue, ids[0], ids[-1]),
        600,
        f"draining {len(entries)} tasks",
        interval=0.05,
    )
    return len(entries) / queue.db.run(bq.span_seconds(ids[0], ids[-1]))


def drained(queue: TaskQueue, first: int, last: int) -> bool:
    """Whether tasks ``first`` to ``last`` all finished. Tasks of one priority run
    in id order, so the last one is looked up alone until it has finished."""
    if not finished(queue, last):
        return False
    return queue.db.run(bq.unfinished(first, last)) == 0


def finished(queue: TaskQueue, task_id: int) -> bool:
    """Whether a task finished, by key; one that is gone was pruned, so it had."""
    return queue.db.run(bq.finished(task_id))


def enqueue(queue: TaskQueue, tasks: int = 20_000, runs: int = 3, **_: Any) -> dict[str, Any]:
    """Bulk (one ``submit_batch``) and single (``submit_task`` in a loop) submissions per second."""
    client = TaskQueueClient(local_queue=queue)
    single = max(MIN_SINGLE, tasks // SINGLE_SHARE)

    def measure() -> dict[str, float | None]:
        queue.db.run(bq.vacuum_tasks())
        started = time.perf_counter()
        client.submit_batch([{"task_type": NOOP_TYPE}] * tasks)
        bulk = tasks / (time.perf_counter() - started)
        started = time.perf_counter()
        for _ in range(single):
            client.submit_task(NOOP_TYPE)
        one = single / (time.perf_counter() - started)
        return {
            "bulk_per_s": bulk,
            "single_per_s": one,
            "single_8_threads_per_s": threaded_singles(client, single),
        }

    figures = median_of(runs, measure)
    queue.db.run(bq.delete_type(NOOP_TYPE))
    return {"system": "omnispindle", "scenario": "enqueue", "tasks": tasks, **figures}


def threaded_singles(client: TaskQueueClient, count: int) -> float:
    """``submit_task`` from ``SINGLE_THREADS`` threads at once: commits share WAL flushes."""
    per_thread = count // SINGLE_THREADS

    def submit() -> None:
        for _ in range(per_thread):
            client.submit_task(NOOP_TYPE)

    threads = [threading.Thread(target=submit) for _ in range(SINGLE_THREADS)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return per_thread * SINGLE_THREADS / (time.perf_counter() - started)


def latency(
    queue: TaskQueue, samples: int = LATENCY_SAMPLES, runs: int = 3, **_: Any
) -> dict[str, Any]:
    """Enqueue-to-start latency with one idle worker waiting: p50 and p99 in ms."""
    client = TaskQueueClient(local_queue=queue)

    def measure() -> dict[str, float | None]:
        with workers(queue, 1, 1):
            delays = [latency_sample(client) for _ in range(samples)]
        cuts = statistics.quantiles(delays, n=100, method="inclusive")
        return {"p50_ms": cuts[49] * 1000, "p99_ms": cuts[98] * 1000}

    return {
        "system": "omnispindle",
        "scenario": "latency",
        "samples": samples,
        **median_of(runs, measure),
    }


def latency_sample(client: TaskQueueClient) -> float:
    """Seconds from the commit of one submission to its executor's start."""
    time.sleep(LATENCY_GAP_S)  # let the worker go idle, as the scenario measures
    task_id = client.submit_task(STAMP_TYPE)
    committed = time.time()
    task = client.wait_for_task(task_id, timeout=30)
    if task["state"] != "succeeded":
        raise BenchmarkError(f"latency probe {task_id} ended {task['state']}")
    started: float = task["result"]["started"]
    return max(0.0, started - committed)
