"""Auto-scaling: a worker grows its pool under a backlog and shrinks it back once idle;
a supervisor reads the backlog its processes face."""

from __future__ import annotations

import logging
import socket
import threading
import time

import pytest

from omnispindle import WorkerClient
from omnispindle._db import queries as q
from omnispindle._db.pool import execute
from omnispindle.cli.backlog import BacklogReader
from omnispindle.errors import ValidationError

WAIT_S = 60


def poll(condition, timeout=WAIT_S, interval=0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(interval)


def most_at_once(intervals):
    """The most intervals that overlap at one moment."""
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    running = most = 0
    for _, step in edges:
        running += step
        most = max(most, running)
    return most


def worker_concurrency(conn, name):
    row = conn.execute(
        "SELECT concurrency FROM omnispindle.workers WHERE name = %s", [name]
    ).fetchone()
    return row and row[0]


def test_a_backlog_of_slow_tasks_grows_the_pool_and_idleness_shrinks_it(
    client, conn, start_worker, caplog
):
    caplog.set_level(logging.INFO, logger="omnispindle.worker")
    intervals: list[tuple[float, float]] = []
    lock = threading.Lock()

    def slow(_task):
        started = time.monotonic()
        time.sleep(0.2)  # the task's own work
        with lock:
            intervals.append((started, time.monotonic()))
        return {}

    ids = client.submit_batch([{"task_type": "slow"} for _ in range(80)])
    start_worker(
        {"slow": slow},
        name="elastic",
        min_concurrency=1,
        max_concurrency=8,
        scale_down_after=1.0,
        heartbeat_interval=0.2,
    )
    assert poll(lambda: worker_concurrency(conn, "elastic")) == 1  # registered at the minimum
    tasks = client.wait_for_batch(ids, timeout=WAIT_S)
    assert {task["state"] for task in tasks} == {"succeeded"}
    assert most_at_once(intervals) > 1, "the pool never grew"
    # Idle now: back to the minimum, in its row from the next heartbeat on.
    poll(lambda: worker_concurrency(conn, "elastic") == 1)
    sizes = [int(r.getMessage().rsplit(" ", 1)[1]) for r in caplog.records if " -> " in r.message]
    assert 1 < max(sizes) <= 8 and sizes[-1] == 1
    assert most_at_once(intervals) <= max(sizes)


def test_a_fixed_worker_stays_at_its_concurrency(client, conn, start_worker):
    ids = client.submit_batch([{"task_type": "quick"} for _ in range(20)])
    start_worker({"quick": lambda _task: {}}, name="fixed", concurrency=3, heartbeat_interval=0.2)
    client.wait_for_batch(ids, timeout=WAIT_S)
    assert worker_concurrency(conn, "fixed") == 3


@pytest.mark.parametrize(
    "settings",
    [
        {"min_concurrency": 2},
        {"max_concurrency": 2},
        {"min_concurrency": 3, "max_concurrency": 2},
        {"concurrency": 5, "min_concurrency": 1, "max_concurrency": 4},
    ],
)
def test_contradictory_pool_sizes_are_refused(queue, settings):
    with pytest.raises(ValidationError, match="concurrency"):
        WorkerClient(local_queue=queue, **settings)


# What a supervisor scales its processes on: one statement, read by BacklogReader.


def register(conn, pid, task_types, capabilities):
    return execute(
        conn,
        q.workers.register_worker(
            name=f"child-{pid}",
            host=socket.gethostname(),
            pid=pid,
            capabilities=capabilities,
            task_types=task_types,
            concurrency=1,
            version="test",
            lease_timeout=30.0,
        ),
    )


def test_the_backlog_counts_what_the_children_could_claim_up_to_the_limit(client, conn, dsn):
    child = register(conn, 4242, ["resize"], ["resize", "gpu"])
    register(conn, 4343, ["other"], ["other"])  # not a child: another supervisor's
    register(conn, 4444, ["resize"], ["resize"])  # a child running nothing
    client.submit_batch([{"task_type": "resize"} for _ in range(5)])
    client.submit_task("resize", required_capabilities=["gpu"])
    client.submit_task("resize", required_capabilities=["tpu"])  # no child could claim it
    client.submit_task("resize", delay=3600)  # not ready yet
    client.submit_batch([{"task_type": "other"} for _ in range(3)])
    execute(
        conn,
        q.tasks.claim_tasks(
            task_types=["resize"], capabilities=[], limit=2, worker_id=child, lease_seconds=30.0
        ),
    )
    reader = BacklogReader(dsn)
    try:
        busy = {"running": 2, "busy_pids": [4242]}
        assert reader.read([4242, 4444], limit=100) == {"ready": 4, **busy}
        assert reader.read([4242], limit=3) == {"ready": 3, **busy}
        assert reader.read([], limit=100) == {"ready": 0, "running": 0, "busy_pids": []}
        client.pause_task_type("resize")
        assert reader.read([4242], limit=100) == {"ready": 0, **busy}
    finally:
        reader.close()


def test_an_unreachable_database_reads_as_no_backlog(caplog):
    reader = BacklogReader("postgresql://nobody@127.0.0.1:1/none?connect_timeout=1")
    assert reader.read([1], limit=10) is None
    assert reader.read([1], limit=10) is None
    assert caplog.text.count("cannot read the backlog") == 1
