"""``omnispindle bench steady``: tasks fed at a fixed offered rate, or to a fixed
depth, while workers drain them.

The drain and soak scenarios start from a backlog; a queue in service is fed
and drained at once. A feeder submits, every ``FEED_EVERY_S``, the tasks due
by then at ``rate`` a second (or, given a ``depth``, as many as bring the
tasks waiting to start back up to it), for ``seconds``, to worker processes
running 1 ms tasks. The figures: the offered rate and the completed one (the
tasks finished by the feed's end and a grace of ``GRACE_S``, over the feed's
length), the delay from each task's submission to its start (p50, p99 and
max, by the database's clock), the tasks table's size at the start, at its
largest and at the end, and the WAL the server wrote meanwhile.
"""

from __future__ import annotations

from typing import Any

from omnispindle.bench import queries as bq
from omnispindle.bench.feeding import GRACE_S, check_steady, feed, pace_of, steady_row
from omnispindle.bench.throughput import drained, timed_drain, workers
from omnispindle.bench.workflows import BenchmarkError, wait_for
from omnispindle.client import TaskQueueClient
from omnispindle.task_queue import TaskQueue

NAP_TYPE = "bench_nap"
TASK_SECONDS = 0.001
# The backlog whose drain rate a share is taken of, by default.
SHARE_DRAIN_TASKS = 20_000


def steady(
    queue: TaskQueue,
    rate: float = 1000.0,
    seconds: float = 60.0,
    workers_count: int = 2,
    concurrency: int = 32,
    depth: int | None = None,
    share: float | None = None,
    drain_per_s: float | None = None,
    tasks: int = SHARE_DRAIN_TASKS,
    **_: Any,
) -> dict[str, Any]:
    """Feed ``rate`` tasks a second (or keep ``depth`` of them waiting) for ``seconds``
    while ``workers_count`` processes of ``concurrency`` run them; rates, delays,
    sizes and WAL. Given a ``share``, the rate is that share of the drain of ``tasks``
    of the same tasks, or of ``drain_per_s`` when the caller measured it already."""
    check_steady(rate, seconds, depth, share, tasks)
    if share is not None:
        if drain_per_s is None:
            drain_per_s = nap_drain_rate(queue, tasks, workers_count, concurrency)
        rate = share * drain_per_s
    queue.db.run(bq.vacuum_tasks())
    pace = pace_of(rate, depth, lambda: queue.db.run(bq.waiting(NAP_TYPE)))
    with workers(queue, workers_count, concurrency) as _pids:
        submitter = Submitter(TaskQueueClient(local_queue=queue))
        fed = feed(
            submitter.submit,
            pace,
            seconds,
            lambda: queue.db.run(bq.table_bytes()),
            lambda: queue.db.run(bq.wal_position()),
        )
        if submitter.first is None or submitter.last is None:
            raise BenchmarkError(f"{seconds} s of feeding submitted no task")
        first, last = submitter.first, submitter.last
        wait_for(lambda: drained(queue, first, last), 600, "the steady run's last tasks")
    found = queue.db.run(bq.steady_figures(first, last, GRACE_S))
    return {
        "system": "omnispindle",
        "scenario": "steady",
        "workers": workers_count,
        "concurrency": concurrency,
        "seconds": seconds,
        **({} if depth is None else {"depth": depth}),
        **({} if share is None else {"share": share, "drain_per_s": drain_per_s}),
        **steady_row(found, fed),
    }


def rate_from_share(queue: TaskQueue, options: dict[str, Any]) -> dict[str, Any]:
    """Our scenario's options (its defaults included) with their ``share`` of the
    drain turned into a ``rate``, which the peers are offered too."""
    check_steady(
        options["rate"], options["seconds"], options["depth"], options["share"], options["tasks"]
    )
    drain = nap_drain_rate(
        queue, options["tasks"], options["workers_count"], options["concurrency"]
    )
    return {**options, "rate": options["share"] * drain, "drain_per_s": drain}


def nap_drain_rate(queue: TaskQueue, tasks: int, workers_count: int, concurrency: int) -> int:
    """Tasks a second at which the workers drain ``tasks`` 1 ms tasks, all due at once
    a little after they were submitted; they are deleted afterwards, so that the
    steady run starts from the table it would have started from without them."""
    entry = {"task_type": NAP_TYPE, "parameters": {"seconds": TASK_SECONDS}}
    with workers(queue, workers_count, concurrency):
        rate = round(timed_drain(queue, [entry] * tasks))
    queue.db.run(bq.delete_type(NAP_TYPE))
    return rate


class Submitter:
    """Submits the run's 1 ms naps, one batch a call, and keeps the first and last ids."""

    def __init__(self, client: TaskQueueClient) -> None:
        self.client = client
        self.first: int | None = None
        self.last: int | None = None

    def submit(self, count: int) -> None:
        entry = {"task_type": NAP_TYPE, "parameters": {"seconds": TASK_SECONDS}}
        ids = self.client.submit_batch([entry] * count)
        self.first = ids[0] if self.first is None else self.first
        self.last = ids[-1]
