"""``omnispindle bench autoscale``: how fast an auto-scaled worker's pool grows
under a backlog and shrinks back once it is idle.

One worker process runs with ``--min-concurrency 1 --max-concurrency N`` and a
short lease, so that its row's concurrency (written at each heartbeat, a third
of the lease) follows its pool closely. A backlog of tasks that each sleep
``NAP_S`` (waiting, as on I/O) is submitted at once. Growing is timed from the
submit until N tasks run at once; shrinking from the last task's finish until
the worker's row says the pool is back at the minimum.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from omnispindle.bench import queries as bq
from omnispindle.bench.throughput import median_of
from omnispindle.bench.workflows import BenchmarkError, stop_processes, wait_for, worker_process
from omnispindle.client import TaskQueueClient
from omnispindle.task_queue import TaskQueue

NAP_TYPE = "bench_nap"
NAP_S = 0.2
LEASE_S = 3.0  # a heartbeat a second
SCALE_DOWN_AFTER_S = 2.0
GROW_DEADLINE_S = 120.0


def autoscale(
    queue: TaskQueue, tasks: int = 2_000, concurrency: int = 16, runs: int = 3, **_: Any
) -> dict[str, Any]:
    """Medians of the time to grow from 1 to ``concurrency`` and back."""
    if concurrency < 2:
        raise BenchmarkError(f"a pool to grow needs a maximum of 2 or more, got {concurrency}")
    figures = median_of(runs, lambda: _once(queue, tasks, concurrency))
    return {
        "system": "omnispindle",
        "scenario": "autoscale",
        "tasks": tasks,
        "max_concurrency": concurrency,
        "scale_down_after_s": SCALE_DOWN_AFTER_S,
        **figures,
    }


def _once(queue: TaskQueue, tasks: int, most: int) -> dict[str, float | None]:
    name = f"bench-autoscale-{uuid.uuid4().hex[:8]}"
    extra = ["--min-concurrency", "1", "--max-concurrency", str(most),
             "--scale-down-after", str(SCALE_DOWN_AFTER_S)]  # fmt: skip
    process = worker_process(queue.dsn, name, 1, LEASE_S, extra)
    try:
        wait_for(lambda: _concurrency(queue, name) == 1, 60, "the worker's start")
        client = TaskQueueClient(local_queue=queue)
        began = time.monotonic()
        ids = client.submit_batch(
            [{"task_type": NAP_TYPE, "parameters": {"seconds": NAP_S}}] * tasks
        )
        wait_for(
            lambda: queue.db.run(bq.running_on_worker(name, ids)) >= most,
            GROW_DEADLINE_S,
            f"the pool's growth to {most}",
            interval=0.05,
        )
        grown = time.monotonic() - began
        client.wait_for_batch(ids, timeout=GROW_DEADLINE_S + tasks * NAP_S)
        drained = time.monotonic()
        wait_for(lambda: _concurrency(queue, name) == 1, 120, "the pool's shrinking", 0.05)
        shrunk = time.monotonic() - drained
    finally:
        stop_processes([process])
        queue.db.run(bq.delete_type(NAP_TYPE))
    return {"grow_s": grown, "shrink_s": shrunk}


def _concurrency(queue: TaskQueue, name: str) -> int | None:
    """The pool size the worker's row holds, as of its last heartbeat."""
    rows = [w for w in queue.list_workers() if w["name"] == name and w["state"] == "active"]
    return rows[0]["concurrency"] if rows else None
