"""``omnispindle bench fleet``: idle worker processes under one supervisor, by size.

For each process count, ``omnispindle worker --processes N --concurrency 1``
(through ``--pooler-dsn`` when given, with LISTEN on the direct DSN), and once
every process has registered and settled: the client connections the server
holds for the fleet (a pooler's idle ones among them), the server's CPU per
second while the fleet idles, and the enqueue-to-start latency of single
tasks; then the process that holds the sweeper's lease is killed (SIGKILL),
and the time until another holds it is taken. A fleet of a hundred needs the
pooler where ``max_connections`` is Postgres's default of 100.
"""

from __future__ import annotations

import os
import signal
import socket
import statistics
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from omnispindle.bench import queries as bq
from omnispindle.bench.peers import postgres_cpu_seconds
from omnispindle.bench.throughput import STAMP_TYPE, latency_sample, median_of
from omnispindle.bench.workflows import BenchmarkError, stop_processes, wait_for, worker_process
from omnispindle.client import TaskQueueClient
from omnispindle.task_queue import TaskQueue

SETTLE_S = 5.0  # after the last process registered: its first claims and leases done
IDLE_S = 20.0
SAMPLES = 40
START_TIMEOUT_S = 300.0  # a hundred interpreters importing on two cores take a while


def fleet(
    queue: TaskQueue,
    processes: Sequence[int] = (2, 100),
    runs: int = 3,
    seconds: float = IDLE_S,
    pooler_dsn: str | None = None,
    **_: Any,
) -> dict[str, Any]:
    """Per process count: ``connections_Np``, ``idle_cpu_Np`` (server CPU seconds a
    second), ``p50_ms_Np``, ``p99_ms_Np`` and ``handover_s_Np``; medians of ``runs``."""
    figures: dict[str, Any] = {"system": "omnispindle", "scenario": "fleet"}
    for count in processes:

        def measure(count: int = count) -> dict[str, float | None]:
            return measure_fleet(queue, count, seconds, pooler_dsn)

        for name, figure in median_of(runs, measure).items():
            figures[f"{name}_{count}p"] = figure
    queue.db.run(bq.delete_type(STAMP_TYPE))
    return {**figures, "idle_seconds": seconds, "through_pooler": pooler_dsn is not None}


def measure_fleet(
    queue: TaskQueue, count: int, seconds: float, pooler_dsn: str | None
) -> dict[str, float | None]:
    """One fleet of ``count`` processes: its connections, idle CPU and latency."""
    name = f"bench-fleet-{uuid.uuid4().hex[:8]}"
    with supervised_fleet(queue, name, count, pooler_dsn):
        time.sleep(SETTLE_S)
        connections = held_connections(queue)
        cpu_before = postgres_cpu_seconds(queue.dsn)
        time.sleep(seconds)
        cpu_after = postgres_cpu_seconds(queue.dsn)
        client = TaskQueueClient(local_queue=queue)
        delays = sorted(latency_sample(client) for _ in range(SAMPLES))
        handover = sweeper_handover(queue, name)
    idle_cpu = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
    return {
        "connections": float(connections),
        "idle_cpu": None if idle_cpu is None else idle_cpu / seconds,
        "p50_ms": statistics.median(delays) * 1000,
        "p99_ms": statistics.quantiles(delays, n=100, method="inclusive")[98] * 1000,
        "handover_s": handover,
    }


def held_connections(queue: TaskQueue) -> int:
    """The connections the server holds for others than the benchmark: the least of
    a few counts, so that one open for a moment (a listener's probe) is left out."""
    others = bq.database_connections(own_backends(queue))
    counts = []
    for _ in range(3):
        counts.append(queue.db.run(others))
        time.sleep(0.5)
    return min(counts)


def own_backends(queue: TaskQueue) -> list[int]:
    """The benchmark's own connections: its pool's (one: it runs one call at a time)
    and its LISTEN connection's, once a wait opened one."""
    listening = queue.notifier.backend_pid
    return [queue.db.run(bq.backend_pid()), *([] if listening is None else [listening])]


def sweeper_handover(queue: TaskQueue, name: str) -> float:
    """SIGKILL the fleet's process that holds the sweeper's lease; seconds until
    another holds it. Only a process of this fleet on this host is killed."""

    def holder() -> int | None:
        found = queue.db.run(bq.sweep_holder())
        return None if found is None else int(found["pid"])

    wait_for(lambda: holder() is not None, 60, "a sweeper's election")
    killed = holder()
    fleet = {
        w["pid"]
        for w in queue.list_workers()
        if w["name"].startswith(name) and w["host"] == socket.gethostname()
    }
    if killed not in fleet:
        raise BenchmarkError(f"the sweeper's lease is held by pid {killed}, not by this fleet")
    os.kill(killed, signal.SIGKILL)
    started = time.monotonic()
    wait_for(lambda: holder() not in (None, killed), 60, "the sweeper's handover")
    return time.monotonic() - started


@contextmanager
def supervised_fleet(
    queue: TaskQueue, name: str, count: int, pooler_dsn: str | None
) -> Iterator[None]:
    """``omnispindle worker --processes COUNT --name NAME``, returned once every
    process registered."""
    through = [] if pooler_dsn is None else ["--pooler", "--listen-dsn", queue.dsn]
    supervisor = worker_process(
        pooler_dsn or queue.dsn, name, 1, 30.0, ["--processes", str(count), *through]
    )
    try:
        wait_for(
            lambda: sum(w["name"].startswith(name) for w in queue.list_workers()) == count,
            START_TIMEOUT_S,
            f"the start of {count} worker processes",
            interval=0.5,
        )
        yield
    finally:
        stop_processes([supervisor], timeout=120.0)
