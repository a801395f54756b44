"""``omnispindle bench soak``: a long run with retention on.

A submitter keeps a backlog of no-op tasks until ``tasks`` have gone through
worker processes that prune finished tasks after ``retention`` seconds (or,
with ``archive_after``, move them to the partitioned history after that long
and drop its partitions past the retention). Once a second the run records
the sizes of ``tasks`` and of the history, the workers' memory and the rate; a
probe times a claim of the kind workers make. Optionally, another session
holds a REPEATABLE READ snapshot open for ``snapshot_seconds`` partway
through, which keeps vacuum and pruning from reclaiming anything meanwhile.
"""

from __future__ import annotations

import statistics
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg

from omnispindle._db import queries as q
from omnispindle._db.pool import execute
from omnispindle.bench import queries as bq
from omnispindle.bench.throughput import NOOP_TYPE, drained, finished, workers
from omnispindle.bench.workflows import BenchmarkError
from omnispindle.client import TaskQueueClient
from omnispindle.task_queue import TaskQueue

BATCH = 10_000
SAMPLE_EVERY_S = 1.0
PROBE_EVERY_S = 0.2
PROBE_LIMIT = 16
WARM_UP_SHARE = 0.1
AFTER_SNAPSHOT_S = 60.0
WINDOW_S = 10.0
# The first and last minute of the backlog, whose rates are compared.
RATE_WINDOW_S = 60.0
# Sizes over time are reported at this many points of the run.
SIZE_POINTS = 10


@dataclass
class Samples:
    """What the soak saw, one entry per sample (seconds since the start)."""

    at: list[float] = field(default_factory=list)
    done: list[int] = field(default_factory=list)
    table_bytes: list[int] = field(default_factory=list)
    history_bytes: list[int] = field(default_factory=list)
    rss_mb: list[float] = field(default_factory=list)
    claims_ms: list[tuple[float, float]] = field(default_factory=list)

    def rate(self, start: float, end: float) -> float | None:
        """Tasks per second finished between two moments, from the nearest samples."""
        inside = [i for i, t in enumerate(self.at) if start <= t <= end]
        if len(inside) < 2:
            return None
        first, last = inside[0], inside[-1]
        return (self.done[last] - self.done[first]) / (self.at[last] - self.at[first])

    def when_done(self, count: float) -> float | None:
        """The first sample at which ``count`` tasks had finished; None if none."""
        return next((t for t, d in zip(self.at, self.done) if d >= count), None)


def soak(
    queue: TaskQueue,
    tasks: int = 1_000_000,
    workers_count: int = 2,
    concurrency: int = 16,
    retention: float = 10.0,
    snapshot_seconds: float = 0.0,
    archive_after: float | None = None,
    **_: Any,
) -> dict[str, Any]:
    """Push ``tasks`` through with retention on; sizes, claim times and memory, start and end."""
    if tasks < BATCH:
        raise BenchmarkError(f"a soak needs at least {BATCH} tasks, got {tasks}")
    stop = threading.Event()
    samples = Samples()
    snapshot = SnapshotHolder(queue.dsn, snapshot_seconds, after_tasks=int(tasks * 0.2))
    extra = ["--retention", str(retention)]
    if archive_after is not None:
        extra += ["--archive-after", str(archive_after)]
    with workers(queue, workers_count, concurrency, extra=extra) as pids:
        started = time.monotonic()
        submitter = Submitter(queue, tasks)
        threads = [
            threading.Thread(target=submitter.run, args=(stop,), daemon=True),
            threading.Thread(
                target=probe_claims,
                args=(queue, samples, started, stop, snapshot.holding),
                daemon=True,
            ),
        ]
        try:
            for thread in threads:
                thread.start()
            while not (submitter.all_done() and snapshot.finished(time.monotonic() - started)):
                record(queue, samples, submitter, pids, started)
                snapshot.step(submitter.done(), time.monotonic() - started)
                time.sleep(SAMPLE_EVERY_S)
            record(queue, samples, submitter, pids, started)
        finally:
            stop.set()
            snapshot.close()
    figures = summary(samples, tasks, retention, snapshot)
    if archive_after is not None:
        figures.update(history_figures(samples, archive_after))
    return figures


class Submitter:
    """Keeps one to two batches of tasks waiting until ``total`` have been submitted.

    It follows progress by looking tasks up by key, never by counting them:
    under a held snapshot a count reads every index entry the snapshot keeps
    alive, and the soak would measure its own polling.
    """

    def __init__(self, queue: TaskQueue, total: int) -> None:
        self.queue = queue
        self.client = TaskQueueClient(local_queue=queue)
        self.total = total
        self.submitted = 0
        self.batches: list[tuple[int, int]] = []  # first and last id of each batch

    def all_done(self) -> bool:
        return self.submitted >= self.total and drained(
            self.queue, self.batches[0][0], self.batches[-1][1]
        )

    def done(self) -> int:
        """Tasks finished so far, to within the few that run out of id order: tasks
        of one priority run in id order, so the first unfinished id is searched for."""
        if not self.batches:
            return 0
        done_below, unfinished = self.batches[0][0] - 1, self.batches[-1][1]
        if finished(self.queue, unfinished):
            return self.submitted
        while unfinished - done_below > 1:
            middle = (done_below + unfinished) // 2
            if finished(self.queue, middle):
                done_below = middle
            else:
                unfinished = middle
        return sum(max(0, min(last, done_below) - first + 1) for first, last in self.batches)

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set() and self.submitted < self.total:
            if len(self.batches) >= 2 and not finished(self.queue, self.batches[-2][1]):
                stop.wait(0.05)
                continue
            ids = self.client.submit_batch(
                [{"task_type": NOOP_TYPE}] * min(BATCH, self.total - self.submitted)
            )
            self.batches.append((ids[0], ids[-1]))
            self.submitted += len(ids)


class SnapshotHolder:
    """A REPEATABLE READ transaction held open for a while once ``after_tasks`` are done."""

    def __init__(self, dsn: str, seconds: float, after_tasks: int) -> None:
        self.dsn, self.seconds, self.after_tasks = dsn, seconds, after_tasks
        self.began: float | None = None
        self.ended: float | None = None
        self.conn: Any = None

    def step(self, done: int, now: float) -> None:
        if self.seconds <= 0:
            return
        if self.began is None and done >= self.after_tasks:
            self.conn = psycopg.connect(self.dsn)
            self.conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            execute(self.conn, bq.take_snapshot())  # the first statement fixes the snapshot
            self.began = now
        elif self.began is not None and self.ended is None and now >= self.began + self.seconds:
            self.close()
            self.ended = now

    def holding(self) -> bool:
        return self.began is not None and self.ended is None

    def close(self) -> None:
        """End the held transaction, if any (also when the soak stops early)."""
        if self.conn is not None and not self.conn.closed:
            self.conn.close()

    def finished(self, now: float) -> bool:
        return self.seconds <= 0 or (
            self.ended is not None and now >= self.ended + AFTER_SNAPSHOT_S + WINDOW_S
        )


def record(
    queue: TaskQueue, samples: Samples, submitter: Submitter, pids: list[int], started: float
) -> None:
    samples.at.append(time.monotonic() - started)
    samples.done.append(submitter.done())
    samples.table_bytes.append(queue.db.run(bq.table_bytes()))
    samples.history_bytes.append(queue.db.run(q.history.history_bytes()))
    import psutil  # omnispindle[bench]

    rss = 0.0
    for pid in pids:
        try:
            rss = max(rss, psutil.Process(pid).memory_info().rss / 2**20)
        except psutil.NoSuchProcess:
            pass
    samples.rss_mb.append(rss)


def probe_claims(
    queue: TaskQueue,
    samples: Samples,
    started: float,
    stop: threading.Event,
    paused: Callable[[], bool],
) -> None:
    """Time a claim from the head every ``PROBE_EVERY_S``, then finish what it took.

    Not while ``paused()``: under a held snapshot a claim from the head reads
    every entry the snapshot keeps (which workers avoid), and only the claims
    at the start and at the end are reported.
    """
    worker = uuid.uuid4()
    while not stop.wait(PROBE_EVERY_S):
        if paused():
            continue
        began = time.perf_counter()
        rows = queue.db.run(
            q.tasks.claim_tasks(
                task_types=[NOOP_TYPE],
                capabilities=[NOOP_TYPE],
                limit=PROBE_LIMIT,
                worker_id=worker,
                lease_seconds=30.0,
            )
        )
        samples.claims_ms.append((time.monotonic() - started, (time.perf_counter() - began) * 1000))
        if rows:
            queue.db.run(
                q.tasks.complete_tasks(
                    q.tasks.Results(
                        [r["id"] for r in rows],
                        [r["lease_token"] for r in rows],
                        ["{}"] * len(rows),
                    ),
                )
            )


def p99(values: list[float]) -> float | None:
    return statistics.quantiles(values, n=100, method="inclusive")[98] if len(values) > 1 else None


def summary(
    samples: Samples, tasks: int, retention: float, snapshot: SnapshotHolder
) -> dict[str, Any]:
    """Start against end: sizes, claim p99 and memory; rates around the held snapshot."""
    total = samples.at[-1]
    warm = samples.when_done(tasks * WARM_UP_SHARE) or 0.0
    tail = total - (total - warm) * WARM_UP_SHARE
    claims_start = [ms for t, ms in samples.claims_ms if t <= warm]
    claims_end = [ms for t, ms in samples.claims_ms if t >= tail]
    after_warm = [
        (t, b, r) for t, b, r in zip(samples.at, samples.table_bytes, samples.rss_mb) if t >= warm
    ]
    rate = backlog_rate(samples, tasks)
    emptied = samples.when_done(tasks)  # the last minute of the backlog ends here
    if emptied is None:
        emptied = total
    figures = {
        "system": "omnispindle",
        "scenario": "soak",
        "tasks": tasks,
        "retention_s": retention,
        "seconds": round(total, 1),
        "tasks_per_s": round(samples.done[-1] / total),
        "table_mb_warm": round(after_warm[0][1] / 2**20, 1),
        "table_mb_max": round(max(b for _, b, _ in after_warm) / 2**20, 1),
        "table_mb_end": round(samples.table_bytes[-1] / 2**20, 1),
        "claim_p99_ms_start": _round(p99(claims_start)),
        "claim_p99_ms_end": _round(p99(claims_end)),
        "rss_mb_warm": round(after_warm[0][2], 1),
        "rss_mb_max": round(max(r for _, _, r in after_warm), 1),
        "rate_first_min": rate(warm, warm + RATE_WINDOW_S),
        "rate_last_min": rate(emptied - RATE_WINDOW_S, emptied),
    }
    if snapshot.began is not None and snapshot.ended is not None:
        figures.update(
            {
                "snapshot_s": snapshot.seconds,
                "rate_before": rate(snapshot.began - 60, snapshot.began),
                "rate_during": rate(snapshot.began, snapshot.ended),
                "rate_last_min_of_snapshot": rate(snapshot.ended - 60, snapshot.ended),
                "rate_1_min_after": rate(
                    snapshot.ended + AFTER_SNAPSHOT_S, snapshot.ended + AFTER_SNAPSHOT_S + WINDOW_S
                ),
            }
        )
    return figures


def history_figures(samples: Samples, archive_after: float) -> dict[str, Any]:
    """The history's size at its largest and at the end, and both tables' sizes
    (MB) at ``SIZE_POINTS`` moments evenly through the run."""
    points = [round(i * (len(samples.at) - 1) / (SIZE_POINTS - 1)) for i in range(SIZE_POINTS)]
    return {
        "archive_after_s": archive_after,
        "history_mb_max": round(max(samples.history_bytes) / 2**20, 1),
        "history_mb_end": round(samples.history_bytes[-1] / 2**20, 1),
        "tasks_mb_over_time": [round(samples.table_bytes[i] / 2**20) for i in points],
        "history_mb_over_time": [round(samples.history_bytes[i] / 2**20) for i in points],
        "minutes_over_time": [round(samples.at[i] / 60, 1) for i in points],
    }


def backlog_rate(samples: Samples, tasks: int) -> Callable[[float, float], float | None]:
    """The rate between two moments, or None once every task was done before the
    second: workers then waited for tasks, and the figure would measure the wait."""
    emptied = samples.when_done(tasks)
    if emptied is None:
        emptied = float("inf")
    return lambda start, end: None if end > emptied else _round(samples.rate(start, end))


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)
