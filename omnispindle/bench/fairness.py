"""``omnispindle bench fairness``: fair share and a rate limit over a minute.

One task type, fair share between its groups and at most ``RATE`` starts a
second. Group "big" submits 100 times as many tasks as group "small", and first;
worker processes drain them for ``WINDOW_S`` seconds after a warm-up. Both
groups should get half the starts, and together the rate: each within 10 %.
"""

from __future__ import annotations

import time
from typing import Any

from omnispindle.bench import queries as bq
from omnispindle.bench.throughput import NOOP_TYPE, workers
from omnispindle.bench.workflows import BenchmarkError
from omnispindle.client import TaskQueueClient
from omnispindle.task_queue import TaskQueue

RATE = 50.0
WINDOW_S = 60.0
WARM_UP_S = 5.0
FLOOD = 100  # how many times more the big group submits
TOLERANCE = 0.1


def fairness(
    queue: TaskQueue,
    workers_count: int = 4,
    concurrency: int = 8,
    window_s: float = WINDOW_S,
    warm_up_s: float = WARM_UP_S,
    **_: Any,
) -> dict[str, Any]:
    """Starts per group and in all over ``window_s`` seconds, against the rate."""
    small = int(RATE * (warm_up_s + window_s))  # enough for small to never run out
    client = TaskQueueClient(local_queue=queue)
    client.set_task_type_strategy(NOOP_TYPE, "fair")
    client.set_task_type_limit(NOOP_TYPE, starts_per_second=RATE)
    try:
        for group, count in (("big", FLOOD * small), ("small", small)):
            client.submit_batch([{"task_type": NOOP_TYPE, "group_key": group}] * count)
        with workers(queue, workers_count, concurrency):
            time.sleep(warm_up_s)  # past the first burst
            start = queue.db.run(bq.clock())
            time.sleep(window_s)  # the benchmark's span itself, not a wait for an event
            end = queue.db.run(bq.clock())
        starts = queue.db.run(bq.group_starts(NOOP_TYPE, start, end))
    finally:
        client.clear_task_type_limit(NOOP_TYPE)
        client.set_task_type_strategy(NOOP_TYPE, "priority")
        queue.db.run(bq.delete_type(NOOP_TYPE))
    return _figures(starts, end - start, workers_count, concurrency)


def _figures(
    starts: dict[str, int], seconds: float, workers_count: int, concurrency: int
) -> dict[str, Any]:
    total = sum(starts.values())
    if not total:
        raise BenchmarkError("no task started within the window")
    rate = total / seconds
    shares = {group: starts.get(group, 0) / total for group in ("big", "small")}
    return {
        "system": "omnispindle",
        "scenario": "fairness",
        "workers": workers_count,
        "concurrency": concurrency,
        "window_s": seconds,
        "limit_per_s": RATE,
        "starts_per_s": rate,
        "big_starts": starts.get("big", 0),
        "small_starts": starts.get("small", 0),
        "small_share": shares["small"],
        "met": abs(rate - RATE) <= TOLERANCE * RATE
        and all(abs(share - 0.5) <= TOLERANCE * 0.5 for share in shares.values()),
    }
