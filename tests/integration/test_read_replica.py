"""A streaming replica for what only reads (issue 19): ``read_dsn`` sends task records,
inspection, metrics, status, the dashboard's pages and waits' checks to it, while
writes, claims and LISTEN stay on the primary."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from omnispindle import AsyncTaskQueueClient, TaskQueue, TaskQueueClient
from omnispindle._db.notifier import FINISHED_CHANNEL
from omnispindle._db.rows import TaskRecord
from omnispindle.cli.main import main
from omnispindle.errors import WaitTimeoutError

from ..acceptance import servers
from ..acceptance.workers import poll

DEADLINE = 30


@pytest.fixture(scope="module")
def primary() -> Iterator[servers.OwnServer]:
    with servers.own_server(migrated=True) as own:
        yield own


@pytest.fixture(scope="module")
def replica(primary) -> Iterator[servers.Replica]:
    with servers.replica_of(primary) as standby:
        yield standby


@pytest.fixture
def queue(primary, replica) -> Iterator[TaskQueue]:
    with TaskQueue(primary.dsn, read_dsn=replica.dsn) as task_queue:
        yield task_queue
    replica.resume_replay()  # a test that paused it leaves it paused


def state_on(dsn: str, task_id: int) -> str | None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT state::text FROM omnispindle.tasks WHERE id = %s", (task_id,)
        ).fetchone()
    return None if row is None else row[0]


def await_state(dsn: str, task_id: int, state: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while state_on(dsn, task_id) != state:
        assert time.monotonic() < deadline, f"task {task_id} never {state} at {dsn}"
        time.sleep(0.01)


def replica_past_the_waits_start(primary, replica, statements) -> None:
    """Once a wait's first check has run, have the replica replay past the point the
    wait noted as it started, then stand still: the wait reads the replica from now on."""
    poll(lambda: "replayed_to" in statements.names, DEADLINE)
    replica.catch_up_with(primary)
    replica.pause_replay()


def test_reads_come_from_the_replica_and_a_wait_follows_its_replay(
    queue, primary, replica, start_worker, record_statements
):
    client = TaskQueueClient(local_queue=queue, poll_interval=10.0)
    gate = threading.Event()
    start_worker({"gated": lambda task: gate.wait(DEADLINE) and {"done": True}})
    task_id = client.submit_task("gated")
    await_state(replica.dsn, task_id, "running")

    outcome: dict[str, Any] = {}
    waiter = threading.Thread(
        target=lambda: outcome.update(task=client.wait_for_task(task_id, timeout=DEADLINE))
    )
    subscribed = queue.notifier.subscriptions(FINISHED_CHANNEL)
    statements = record_statements()
    waiter.start()
    # The finish must come while the wait listens, as it would in a wait of any length.
    poll(lambda: queue.notifier.subscriptions(FINISHED_CHANNEL) > subscribed, DEADLINE)
    assert queue.notifier.connected.wait(DEADLINE)
    replica_past_the_waits_start(primary, replica, statements)
    gate.set()
    await_state(primary.dsn, task_id, "succeeded")

    # The replica still shows the task running, and so does every read.
    assert client.get_task(task_id)["state"] == "running"
    assert queue.get_metrics()["totals"]["running"] == 1
    assert waiter.is_alive()

    # The finish's notification came while the replica stood still; the wait
    # checks again at growing gaps, not only after its 10 s poll interval.
    resumed = time.monotonic()
    replica.resume_replay()
    waiter.join(DEADLINE)
    waited = time.monotonic() - resumed
    assert outcome["task"]["state"] == "succeeded"
    assert outcome["task"]["result"] == {"done": True}
    assert waited < 3.0, f"the wait saw the replayed finish {waited:.2f} s after the resume"


def test_a_task_the_replica_has_not_replayed_is_read_from_the_primary(queue, replica):
    client = TaskQueueClient(local_queue=queue)
    replica.pause_replay()
    task_id = client.submit_task("nobody_runs_this")
    assert state_on(replica.dsn, task_id) is None
    assert client.get_task(task_id)["state"] == "pending"
    # A wait asks the primary whether its tasks exist, and then waits on the replica.
    with pytest.raises(WaitTimeoutError):
        client.wait_for_batch([task_id], timeout=0.3)


def test_the_command_line_reads_the_replica_with_read_dsn(queue, primary, replica, capsys):
    client = TaskQueueClient(local_queue=queue)
    seen = client.submit_task("listed")
    await_state(replica.dsn, seen, "pending")
    replica.pause_replay()
    unseen = client.submit_task("listed")

    def listed(*options: str) -> set[int]:
        assert main(["tasks", "--dsn", primary.dsn, "--json", *options]) == 0
        return {row["task_id"] for row in json.loads(capsys.readouterr().out)}

    assert {seen, unseen} <= listed()
    assert seen in listed("--read-dsn", replica.dsn)
    assert unseen not in listed("--read-dsn", replica.dsn)
    assert main(["status", "--dsn", primary.dsn, "--read-dsn", replica.dsn, "--json"]) == 0
    ready = {row["task_type"]: row for row in json.loads(capsys.readouterr().out)["queues"]}
    assert ready["listed"]["pending"] == 1


def test_every_read_runs_on_a_hot_standby(queue, primary, replica, start_worker, capsys):
    """Nothing a read sends writes: each runs on the replica, which refuses writes."""
    client = TaskQueueClient(local_queue=queue, poll_interval=0.2)
    start_worker({"inspected": lambda task: {"n": task["parameters"]["n"]}})
    client.pause_task_type("held")
    client.set_task_type_limit("inspected", max_running=4)
    client.add_periodic_task("nightly", "0 3 * * *", "inspected", {"n": 0})
    ids = client.submit_batch(
        [{"task_type": "inspected", "parameters": {"n": n}} for n in range(5)]
    )
    assert [t["result"] for t in client.wait_for_batch(ids, timeout=DEADLINE)] == [
        {"n": n} for n in range(5)
    ]
    await_state(replica.dsn, ids[-1], "succeeded")

    assert [p["task_type"] for p in client.paused_task_types()] == ["held"]
    assert [row["task_type"] for row in client.task_type_limits()] == ["inspected"]
    assert client.task_type_strategies() == []
    assert client.workers_needed(concurrency=4, task_types=["inspected"]) == 0
    assert [s["name"] for s in client.list_periodic_tasks()] == ["nightly"]
    assert "inspected" not in {row["task_type"] for row in client.worker_demand()}
    assert any(w["state"] == "active" for w in queue.list_workers())
    assert queue.get_metrics()["totals"]["succeeded"] >= 5
    assert main(["metrics", "--once", "--dsn", primary.dsn, "--read-dsn", replica.dsn]) == 0
    assert "omnispindle_tasks" in capsys.readouterr().out

    # And each read is the replica's: with its replay paused, none sees what changes now.
    succeeded = queue.get_metrics()["totals"]["succeeded"]
    replica.pause_replay()
    client.pause_task_type("held_later")
    client.set_task_type_limit("limited_later", max_running=2)
    client.set_task_type_strategy("limited_later", "aging", aging_seconds=10)
    client.add_periodic_task("weekly", "0 4 * * 1", "inspected", {"n": 0})
    client.submit_task("waiting_later")
    more = client.submit_batch([{"task_type": "inspected", "parameters": {"n": 9}}])
    await_state(primary.dsn, more[0], "succeeded")
    assert [p["task_type"] for p in client.paused_task_types()] == ["held"]
    assert [row["task_type"] for row in client.task_type_limits()] == ["inspected"]
    assert client.task_type_strategies() == []
    assert [s["name"] for s in client.list_periodic_tasks()] == ["nightly"]
    assert client.workers_needed(concurrency=1, task_types=["waiting_later"]) == 0
    assert "waiting_later" not in {row["task_type"] for row in client.worker_demand()}
    assert queue.get_metrics()["totals"]["succeeded"] == succeeded


def test_the_dashboard_reads_its_pages_from_the_replica(queue, primary, replica):
    from starlette.testclient import TestClient

    from omnispindle.dashboard import app

    client = TaskQueueClient(local_queue=queue)
    seen = client.submit_task("shown")
    await_state(replica.dsn, seen, "pending")
    replica.pause_replay()
    unseen = client.submit_task("shown")
    with TestClient(app(dsn=primary.dsn, read_dsn=replica.dsn)) as web:
        listed = web.get("/tasks", params={"type": "shown"}).text
        assert f"/tasks/{seen}" in listed
        assert f"/tasks/{unseen}" not in listed
        for page in ("/", "/workers", f"/tasks/{seen}", "/schedules"):
            assert web.get(page).status_code == 200, page
        # A task the replica has not replayed is read from the primary.
        assert web.get(f"/tasks/{unseen}").status_code == 200


def test_the_asyncio_client_given_the_queue_reads_its_replica(
    queue, primary, replica, start_worker, record_statements
):
    gate = threading.Event()
    start_worker({"gated_async": lambda task: gate.wait(DEADLINE) and {"done": True}})

    async def scenario() -> float:
        async with AsyncTaskQueueClient(local_queue=queue, poll_interval=10.0) as client:
            task_id = await client.submit_task("gated_async")
            await asyncio.to_thread(await_state, replica.dsn, task_id, "running")
            statements = record_statements()
            waiting = asyncio.create_task(client.wait_for_task(task_id, timeout=DEADLINE))
            deadline = time.monotonic() + DEADLINE
            while not (
                client.notifier.subscriptions(FINISHED_CHANNEL)
                and client.notifier.connected.is_set()
            ):
                assert time.monotonic() < deadline, "the wait never listened"
                await asyncio.sleep(0.01)
            await asyncio.to_thread(replica_past_the_waits_start, primary, replica, statements)
            gate.set()
            await asyncio.to_thread(await_state, primary.dsn, task_id, "succeeded")
            assert (await client.get_task(task_id))["state"] == "running"
            assert not waiting.done()
            resumed = time.monotonic()
            await asyncio.to_thread(replica.resume_replay)
            assert (await waiting)["result"] == {"done": True}
            return time.monotonic() - resumed

    waited = asyncio.run(scenario())
    assert waited < 3.0, f"the wait saw the replayed finish {waited:.2f} s after the resume"


def failing_first(task):
    if task["attempt"] == 1:
        raise RuntimeError("the first attempt fails")
    return {"attempt": task["attempt"]}


def test_a_wait_after_a_retry_returns_the_new_run_not_the_failure_the_replica_still_shows(
    queue, replica, start_worker
):
    client = TaskQueueClient(local_queue=queue, poll_interval=0.2)
    start_worker({"failing_first": failing_first})
    ids = client.submit_batch([{"task_type": "failing_first", "max_retries": 0}] * 2)
    assert {t["state"] for t in client.wait_for_batch(ids, timeout=DEADLINE)} == {"failed"}
    await_state(replica.dsn, ids[-1], "failed")
    replica.pause_replay()  # a replica a moment behind the retry, as every replica is

    client.retry_task(ids[0])
    task = client.wait_for_task(ids[0], timeout=DEADLINE)
    assert (task["state"], task["result"]) == ("succeeded", {"attempt": 2})

    async def retry_and_wait() -> TaskRecord:
        async with AsyncTaskQueueClient(local_queue=queue, poll_interval=0.2) as async_client:
            await async_client.retry_task(ids[1])
            return await async_client.wait_for_task(ids[1], timeout=DEADLINE)

    task = asyncio.run(retry_and_wait())
    assert (task["state"], task["result"]) == ("succeeded", {"attempt": 2})


def test_a_client_given_a_dsn_and_read_dsn_reads_the_replica(primary, replica):
    with TaskQueueClient(dsn=primary.dsn, read_dsn=replica.dsn) as client:
        task_id = client.submit_task("cancelled_unseen")
        await_state(replica.dsn, task_id, "pending")
        replica.pause_replay()
        try:
            client.cancel_task(task_id)
            assert state_on(primary.dsn, task_id) == "cancelled"
            assert client.get_task(task_id)["state"] == "pending"  # as the replica shows it

            async def read_asynchronously() -> str:
                async with AsyncTaskQueueClient(dsn=primary.dsn, read_dsn=replica.dsn) as other:
                    return (await other.get_task(task_id))["state"]

            assert asyncio.run(asyncio.wait_for(read_asynchronously(), DEADLINE)) == "pending"
        finally:
            replica.resume_replay()
