"""``omnispindle bench steady``: tasks fed at a fixed offered rate while workers drain them.

The drain and soak scenarios start from a backlog; a queue in service is fed
and drained at once. A feeder submits, every ``FEED_EVERY_S``, the tasks due
by then at ``rate`` a second, for ``seconds``, to worker processes running
1 ms tasks. The figures: the offered rate and the completed one (the tasks
finished by the feed's end and a grace of ``GRACE_S``, over the feed's
length), the delay from each task's submission to its start (p50, p99 and
max, by the database's clock), and the tasks table's size at the start, at
its largest and at the end.
"""

from __future__ import annotations

import time
from typing import Any

from omnispindle.bench import queries as bq
from omnispindle.bench.throughput import drained, workers
from omnispindle.bench.workflows import BenchmarkError, wait_for
from omnispindle.client import TaskQueueClient
from omnispindle.task_queue import TaskQueue

NAP_TYPE = "bench_nap"
TASK_SECONDS = 0.001
FEED_EVERY_S = 0.01
SIZE_EVERY_S = 1.0
GRACE_S = 1.0


def steady(
    queue: TaskQueue,
    rate: float = 1000.0,
    seconds: float = 60.0,
    workers_count: int = 2,
    concurrency: int = 32,
    **_: Any,
) -> dict[str, Any]:
    """Feed ``rate`` tasks a second for ``seconds`` while ``workers_count``
    processes of ``concurrency`` run them; rates, delays and sizes."""
    if rate <= 0 or seconds <= 0:
        raise BenchmarkError(f"a steady run needs a rate and seconds above 0: {rate}, {seconds}")
    queue.db.run(bq.vacuum_tasks())
    with workers(queue, workers_count, concurrency) as _pids:
        feed = Feed(TaskQueueClient(local_queue=queue), rate)
        sizes = feed.run(queue, seconds)
        if feed.first is None or feed.last is None:
            raise BenchmarkError(f"{seconds} s at {rate} a second submitted no task")
        first, last = feed.first, feed.last
        wait_for(lambda: drained(queue, first, last), 600, "the steady run's last tasks")
    found = queue.db.run(bq.steady_figures(first, last, GRACE_S))
    fed_seconds = max(found["fed_seconds"], FEED_EVERY_S)
    return {
        "system": "omnispindle",
        "scenario": "steady",
        "workers": workers_count,
        "concurrency": concurrency,
        "seconds": seconds,
        "tasks": found["tasks"],
        "offered_per_s": round(found["tasks"] / fed_seconds),
        "completed_per_s": round(found["finished_in_time"] / fed_seconds),
        "p50_ms": round(found["p50_ms"], 2),
        "p99_ms": round(found["p99_ms"], 2),
        "max_ms": round(found["max_ms"], 2),
        "table_mb_start": round(sizes[0] / 2**20, 1),
        "table_mb_max": round(max(sizes) / 2**20, 1),
        "table_mb_end": round(sizes[-1] / 2**20, 1),
    }


class Feed:
    """Submits tasks in small batches, keeping up with a fixed rate."""

    def __init__(self, client: TaskQueueClient, rate: float) -> None:
        self.client = client
        self.rate = rate
        self.submitted = 0
        self.first: int | None = None
        self.last: int | None = None

    def run(self, queue: TaskQueue, seconds: float) -> list[int]:
        """Feed for ``seconds``; the table's size in bytes once a second."""
        sizes: list[int] = []
        started = time.monotonic()
        next_size = started
        while (elapsed := time.monotonic() - started) < seconds:
            self.submit(int(self.rate * elapsed) - self.submitted)
            if time.monotonic() >= next_size:
                sizes.append(queue.db.run(bq.table_bytes()))
                next_size += SIZE_EVERY_S
            time.sleep(FEED_EVERY_S)  # the feed's pace: the tasks due by then go next
        sizes.append(queue.db.run(bq.table_bytes()))
        return sizes

    def submit(self, count: int) -> None:
        if count <= 0:
            return
        entry = {"task_type": NAP_TYPE, "parameters": {"seconds": TASK_SECONDS}}
        ids = self.client.submit_batch([entry] * count)
        self.first = ids[0] if self.first is None else self.first
        self.last = ids[-1]
        self.submitted += count
