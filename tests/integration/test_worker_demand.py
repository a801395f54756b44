"""What the tasks ask of the workers, and the processes a deployment should run."""

from __future__ import annotations

import asyncio
import uuid

import psycopg
import pytest

from omnispindle import AsyncTaskQueueClient, ValidationError
from omnispindle._db import queries as q


def run(queue, count, task_type):
    """Claim ``count`` tasks of ``task_type`` as some worker would."""
    claim = q.tasks.claim_tasks(
        task_types=[task_type],
        capabilities=[],
        limit=count,
        worker_id=uuid.uuid4(),
        lease_seconds=30,
    )
    assert len(queue.db.run(claim)) == count


def test_demand_counts_running_and_ready_within_limits_and_pauses(client, queue):
    client.submit_batch([{"task_type": "free"} for _ in range(10)])
    client.submit_batch([{"task_type": "capped"} for _ in range(10)])
    client.submit_batch([{"task_type": "held"} for _ in range(10)])
    client.submit_task("later", delay=3600)
    run(queue, 4, "free")
    run(queue, 2, "held")
    client.set_task_type_limit("capped", max_running=3)
    client.pause_task_type("held")
    demand = {row["task_type"]: row for row in client.worker_demand()}
    assert {t: (r["running"], r["ready"], r["demand"]) for t, r in demand.items()} == {
        "capped": (0, 10, 3),
        "free": (4, 6, 10),
        "held": (2, 8, 2),
        "later": (0, 0, 0),
    }
    assert demand["held"]["paused"] and demand["capped"]["max_running"] == 3
    # 15 tasks could run: 4 processes of 4, 2 of 8, bounded either way.
    assert client.workers_needed(4) == 4
    assert client.workers_needed(8) == 2
    assert client.workers_needed(4, max_workers=3) == 3
    assert client.workers_needed(100, min_workers=2) == 2
    assert client.workers_needed(1, task_types=["free", "later"]) == 10


def test_an_idle_queue_needs_the_minimum(client):
    assert client.workers_needed(8) == 0
    assert client.workers_needed(8, min_workers=1) == 1


def test_ready_tasks_are_counted_up_to_what_the_most_workers_could_run(client):
    client.submit_batch([{"task_type": "bulk"} for _ in range(500)])
    assert client.workers_needed(2, max_workers=10) == 10
    assert client.workers_needed(2, max_workers=1000) == 250


@pytest.mark.parametrize(
    "arguments",
    [
        {"concurrency": 0},
        {"concurrency": True},
        {"concurrency": 4, "min_workers": -1},
        {"concurrency": 4, "min_workers": 5, "max_workers": 4},
        {"concurrency": 4, "max_workers": 10**6},
        {"concurrency": 4, "task_types": "free"},
        {"concurrency": 4, "task_types": [""]},
    ],
)
def test_bad_arguments_are_a_validation_error(client, arguments):
    with pytest.raises(ValidationError):
        client.workers_needed(**arguments)


@pytest.mark.parametrize(
    "statement",
    [
        "SELECT omnispindle.workers_needed(0)",
        "SELECT omnispindle.workers_needed(NULL)",
        "SELECT omnispindle.workers_needed(4, min_workers => -1)",
        "SELECT omnispindle.workers_needed(4, min_workers => 3, max_workers => 2)",
    ],
)
def test_the_sql_function_refuses_bad_bounds(conn, statement):
    with pytest.raises(psycopg.Error) as refused:
        conn.execute(statement)
    assert refused.value.sqlstate == "OS005"


def test_the_async_client_reads_the_demand(dsn, client):
    client.submit_batch([{"task_type": "t"} for _ in range(5)])

    async def main():
        async with AsyncTaskQueueClient(dsn=dsn) as async_client:
            return await async_client.workers_needed(2), await async_client.worker_demand()

    needed, demand = asyncio.run(main())
    assert needed == 3
    assert [(row["task_type"], row["demand"]) for row in demand] == [("t", 5)]
