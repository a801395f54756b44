"""Waiting on big batches: a bounded number of small statements, whatever the batch size."""

from __future__ import annotations

import asyncio
import itertools
import math
import random
import time
from collections.abc import Iterator
from typing import Any

import pytest

from omnispindle import (
    AsyncTaskQueueClient,
    TaskNotFoundError,
    TaskQueue,
    TaskQueueClient,
    WaitTimeoutError,
)
from omnispindle._client._batch_wait import RECORD_CHUNK
from omnispindle._client._pacing import CheckPacer
from omnispindle._db.query import Query

BATCH = 5000
WORKER_CONCURRENCY = 8
DEADLINE = 120


class StatementLog:
    """Records each query a database runs: its statement's name, parameters and result."""

    def __init__(self, db: Any) -> None:
        self.calls: list[list[Any]] = []
        original = db.run
        if asyncio.iscoroutinefunction(original):

            async def run(operation, **kwargs):
                call = self._record(operation)
                call[2] = await original(operation, **kwargs)
                return call[2]
        else:

            def run(operation, **kwargs):
                call = self._record(operation)
                call[2] = original(operation, **kwargs)
                return call[2]

        db.run = run

    def _record(self, operation: Any) -> list[Any]:
        assert isinstance(operation, Query), "a wait runs single queries"
        self.calls.append([operation.statement.name, operation.params, None])
        return self.calls[-1]

    def names(self) -> list[str]:
        return [name for name, _, _ in self.calls]

    def params_of(self, name: str) -> list[dict]:
        return [params for called, params, _ in self.calls if called == name]

    def rows_of(self, name: str) -> list[dict]:
        return [row for called, _, rows in self.calls if called == name for row in rows or []]


@pytest.fixture
def waiter_queue(dsn: str) -> Iterator[TaskQueue]:
    """A queue handle of the waiter's own, so that only its statements are logged."""
    handle = TaskQueue(dsn=dsn, migrate=False)
    yield handle
    handle.shutdown()


def echo(task_data: dict) -> dict:
    return {"n": task_data["parameters"]["n"]}


def submit_numbered(client: TaskQueueClient, count: int, task_type: str = "echo") -> list[int]:
    return client.submit_batch(
        [{"task_type": task_type, "parameters": {"n": n}} for n in range(count)]
    )


def shuffled_with_repeat(ids: list[int]) -> list[int]:
    """The ids in a random order, the first one twice: results must follow it exactly."""
    order = random.Random(7).sample(ids, len(ids))
    return order + order[:1]


def check_drained_wait(
    log: StatementLog,
    ids: list[int],
    order: list[int],
    tasks: list[dict],
    reports: list[tuple[int, int]],
    elapsed: float,
) -> None:
    """The assertions shared by the sync and async drains."""
    assert [task["task_id"] for task in tasks] == order
    numbers = {task_id: n for n, task_id in enumerate(ids)}
    assert all(task["result"] == {"n": numbers[task["task_id"]]} for task in tasks)
    assert all(task["state"] == "succeeded" for task in tasks)

    assert len(reports) > 1, "progress was reported only at the end"
    assert {total for _, total in reports} == {BATCH}
    assert all(a < b for (a, _), (b, _) in itertools.pairwise(reports))
    assert reports[-1] == (BATCH, BATCH)

    names = log.names()
    assert names[0] == "missing_task_ids" and names.count("missing_task_ids") == 1
    # Paced checks (two unpaced, then at most one per FLOOR seconds), each
    # followed by at most one record fetch, plus chunks when many finish at once.
    checks = 2 + elapsed / CheckPacer.FLOOR + 1
    assert len(names) <= 1 + 2 * checks + math.ceil(BATCH / RECORD_CHUNK)
    assert len(names) < BATCH / 10, f"{len(names)} statements to wait on {BATCH} tasks"
    # A check names the unfinished tasks as a few ranges and stragglers, never id by id.
    for params in log.params_of("finished_task_ids"):
        assert len(params["ids"]) + len(params["lo"]) <= 100
    # Each record is fetched once, in bounded chunks.
    assert sorted(row["task_id"] for row in log.rows_of("get_tasks")) == sorted(ids)
    assert max(len(params["ids"]) for params in log.params_of("get_tasks")) <= RECORD_CHUNK


# ---------------------------------------------------------------- sync client


def test_waiting_on_a_draining_batch_runs_few_small_statements(client, start_worker, waiter_queue):
    ids = submit_numbered(client, BATCH)
    waiter = TaskQueueClient(local_queue=waiter_queue, poll_interval=0.5)
    log = StatementLog(waiter_queue.db)
    reports: list[tuple[int, int]] = []
    order = shuffled_with_repeat(ids)
    start_worker({"echo": echo}, concurrency=WORKER_CONCURRENCY)
    started = time.monotonic()
    tasks = waiter.wait_for_batch(
        order, timeout=DEADLINE, progress=lambda done, total: reports.append((done, total))
    )
    check_drained_wait(log, ids, order, tasks, reports, time.monotonic() - started)


def test_waiting_on_a_finished_batch_fetches_records_in_chunks(client, start_worker, waiter_queue):
    ids = submit_numbered(client, BATCH)
    start_worker({"echo": echo}, concurrency=WORKER_CONCURRENCY)
    client.wait_for_batch(ids, timeout=DEADLINE)
    waiter = TaskQueueClient(local_queue=waiter_queue, poll_interval=0.5)
    log = StatementLog(waiter_queue.db)
    reports: list[tuple[int, int]] = []
    tasks = waiter.wait_for_batch(
        ids, timeout=DEADLINE, progress=lambda done, total: reports.append((done, total))
    )
    assert [task["task_id"] for task in tasks] == ids
    chunks = math.ceil(BATCH / RECORD_CHUNK)
    assert log.names() == ["missing_task_ids", "finished_task_ids"] + ["get_tasks"] * chunks
    assert [done for done, _ in reports] == [
        min(BATCH, RECORD_CHUNK * (i + 1)) for i in range(chunks)
    ]


def test_a_missing_id_raises_before_any_record_is_fetched(client, waiter_queue):
    ids = submit_numbered(client, 3, task_type="nobody_runs")
    absent, also_absent = ids[-1] + 1000, ids[-1] + 2000
    waiter = TaskQueueClient(local_queue=waiter_queue, poll_interval=0.5)
    log = StatementLog(waiter_queue.db)
    with pytest.raises(TaskNotFoundError, match=f"no task with id {absent}$"):
        waiter.wait_for_batch([ids[0], absent, ids[1], also_absent], timeout=DEADLINE)
    assert log.names() == ["missing_task_ids"]


def test_a_gap_inside_a_run_of_ids_is_found(client, waiter_queue):
    ids = submit_numbered(client, 20, task_type="nobody_runs")
    beyond = list(range(ids[-1] + 1, ids[-1] + 11))
    waiter = TaskQueueClient(local_queue=waiter_queue, poll_interval=0.5)
    log = StatementLog(waiter_queue.db)
    with pytest.raises(TaskNotFoundError, match=f"no task with id {beyond[3]}$"):
        waiter.wait_for_batch(ids + beyond[3:] + beyond[:3], timeout=DEADLINE)
    assert log.names() == ["missing_task_ids"]
    assert log.params_of("missing_task_ids")[0]["lo"] == [ids[0]]


def test_an_unfinished_batch_times_out(client, waiter_queue):
    ids = submit_numbered(client, 50, task_type="nobody_runs")
    waiter = TaskQueueClient(local_queue=waiter_queue, poll_interval=0.1)
    started = time.monotonic()
    with pytest.raises(WaitTimeoutError, match="50 of 50 task"):
        waiter.wait_for_batch(ids, timeout=0.5)
    assert 0.5 <= time.monotonic() - started < 5


# ---------------------------------------------------------------- async client


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, DEADLINE + 30))


def test_async_waiting_on_a_draining_batch_runs_few_small_statements(dsn, client, start_worker):
    ids = submit_numbered(client, BATCH)
    order = shuffled_with_repeat(ids)
    reports: list[tuple[int, int]] = []

    async def progress(done: int, total: int) -> None:
        reports.append((done, total))

    async def wait() -> tuple[StatementLog, list[dict], float]:
        async with AsyncTaskQueueClient(dsn=dsn, poll_interval=0.5) as waiter:
            log = StatementLog(waiter.db)
            start_worker({"echo": echo}, concurrency=WORKER_CONCURRENCY)
            started = time.monotonic()
            tasks = await waiter.wait_for_batch(order, timeout=DEADLINE, progress=progress)
            return log, tasks, time.monotonic() - started

    log, tasks, elapsed = run(wait())
    check_drained_wait(log, ids, order, tasks, reports, elapsed)


def test_async_missing_id_raises_before_any_record_is_fetched(dsn, client):
    ids = submit_numbered(client, 3, task_type="nobody_runs")
    absent = ids[-1] + 1000

    async def wait() -> StatementLog:
        async with AsyncTaskQueueClient(dsn=dsn, poll_interval=0.5) as waiter:
            log = StatementLog(waiter.db)
            with pytest.raises(TaskNotFoundError, match=f"no task with id {absent}$"):
                await waiter.wait_for_batch([ids[0], absent, ids[1]], timeout=DEADLINE)
            return log

    assert run(wait()).names() == ["missing_task_ids"]


def test_async_unfinished_batch_times_out(dsn, client):
    ids = submit_numbered(client, 50, task_type="nobody_runs")

    async def wait() -> float:
        async with AsyncTaskQueueClient(dsn=dsn, poll_interval=0.1) as waiter:
            started = time.monotonic()
            with pytest.raises(WaitTimeoutError, match="50 of 50 task"):
                await waiter.wait_for_batch(ids, timeout=0.5)
            return time.monotonic() - started

    assert 0.5 <= run(wait()) < 5
