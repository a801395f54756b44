"""How far a streaming replica trails the primary while workers drain a queue, and
what it adds to a wait that reads it (issue 19): bounded, with the figures printed."""

from __future__ import annotations

import statistics
import threading
import time

import psycopg
import pytest

from omnispindle import TaskQueue, TaskQueueClient, WorkerClient

from . import servers

TASKS = 20_000
WAITS = 100
BOUND_S = 1.0  # the replay lag, and a wait's time, that no sample may pass
DEADLINE = 120


@pytest.fixture(scope="module")
def primary():
    with servers.own_server(migrated=True) as own:
        yield own


@pytest.fixture(scope="module")
def replica(primary):
    with servers.replica_of(primary) as standby:
        yield standby


def replay_lag(dsn: str) -> float | None:
    """The replica's replay lag as the primary last heard it; None while nothing is sent."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT extract(epoch FROM replay_lag)::float8 FROM pg_stat_replication"
        ).fetchone()
    return None if row is None else row[0]


def quantiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return (
        f"p50 {statistics.median(ordered) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, "
        f"max {ordered[-1] * 1000:.1f} ms over {len(ordered)}"
    )


def test_the_replica_trails_a_drain_by_a_bounded_lag(primary, replica, capsys):
    with TaskQueue(primary.dsn, read_dsn=replica.dsn) as queue:
        client = TaskQueueClient(local_queue=queue, poll_interval=1.0)
        worker = WorkerClient(local_queue=queue, concurrency=8, poll_interval=0.2)
        worker.register_task_executor("noop", lambda task: {"ok": True})
        running = threading.Thread(target=worker.start, daemon=True)
        running.start()
        try:
            ids = client.submit_batch([{"task_type": "noop"} for _ in range(TASKS)])
            lags: list[float] = []
            drained = threading.Event()
            waiter = threading.Thread(
                target=lambda: (client.wait_for_batch(ids, timeout=DEADLINE), drained.set())
            )
            waiter.start()
            while not drained.wait(0.05):
                lag = replay_lag(primary.dsn)
                if lag is not None:
                    lags.append(lag)
            waiter.join()

            waits = {"replica": [], "primary": []}
            for via, reading in (("replica", client), ("primary", None)):
                reading = reading or TaskQueueClient(dsn=primary.dsn, poll_interval=1.0)
                for _ in range(WAITS):
                    started = time.monotonic()
                    task_id = client.submit_task("noop")
                    assert reading.wait_for_task(task_id, timeout=DEADLINE)["state"] == "succeeded"
                    waits[via].append(time.monotonic() - started)
                if via == "primary":
                    reading.close()
        finally:
            worker.stop(timeout=DEADLINE)
            running.join(DEADLINE)
    with capsys.disabled():
        print(f"\nreplay lag during a drain of {TASKS} tasks: {quantiles(lags)}")
        for via, samples in waits.items():
            print(f"submit to result of one task, the wait reading the {via}: {quantiles(samples)}")
    assert lags, "the primary never reported the replica's lag"
    assert max(lags) < BOUND_S
    assert max(waits["replica"]) < BOUND_S
