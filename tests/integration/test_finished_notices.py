"""A finished notice names the tasks its statement finished: a wait wakes for its own."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import psycopg
import pytest

from omnispindle import AsyncTaskQueueClient, TaskQueue, TaskQueueClient
from omnispindle._db.notifier import FINISHED_CHANNEL

from ..acceptance.workers import poll
from .test_batch_waits import StatementLog, echo, submit_numbered

DEADLINE = 30
SINGLE_WAITS = 4
BATCH_WAITED = 20  # over FEW_LEFT: the batch's checks name ids, not records
DRAINED = 200


@pytest.fixture
def waiter_queue(dsn: str) -> Iterator[TaskQueue]:
    """A queue handle of the waits' own: its notifier and statements are theirs alone."""
    handle = TaskQueue(dsn=dsn, migrate=False)
    yield handle
    handle.shutdown()


def idle_family(client: TaskQueueClient) -> tuple[int, list[int]]:
    """A task nobody runs and its children: cancelling it finishes them all."""
    parent = client.submit_task("nobody_runs")
    children = client.submit_batch(
        [{"task_type": "nobody_runs", "dependencies": [parent]}] * (SINGLE_WAITS + BATCH_WAITED)
    )
    return parent, children


def initial_checks_done(log: StatementLog) -> bool:
    """Whether every wait has made its first check: each single wait's get_tasks, the batch's."""
    names = log.names()
    return names.count("get_tasks") >= SINGLE_WAITS and "finished_task_ids" in names


def listening(notifier) -> None:
    """Subscribe, and wait for the wake that listening starts with: the waits
    subscribed after it are woken by notices alone."""
    heard = threading.Event()
    notifier.subscribe(FINISHED_CHANNEL, heard.set)
    assert heard.wait(DEADLINE)


def finished_notices(dsn: str, step) -> list[str]:
    """The payloads of the finished notices sent while ``step()`` runs, between
    markers sent before and after it (notices come in commit order)."""
    with (
        psycopg.connect(dsn, autocommit=True) as listener,
        psycopg.connect(dsn, autocommit=True) as sender,
    ):
        listener.execute(f"LISTEN {FINISHED_CHANNEL}")

        def up_to(marker: str) -> list[str]:
            sender.execute("SELECT pg_notify(%s, %s)", [FINISHED_CHANNEL, marker])
            seen = []
            for notice in listener.notifies(timeout=DEADLINE):
                if notice.payload == marker:
                    return seen
                seen.append(notice.payload)
            raise AssertionError(f"the {marker!r} notice never arrived")

        up_to("before")
        step()
        return up_to("after")


def test_a_notice_names_the_tasks_its_statement_finished(dsn, client):
    parent = client.submit_task("nobody_runs")
    few = client.submit_batch([{"task_type": "nobody_runs", "dependencies": [parent]}] * 3)
    other = client.submit_task("nobody_runs")
    many = client.submit_batch([{"task_type": "nobody_runs", "dependencies": [other]}] * 401)

    # One notice per statement: the cancel's, and its cascade's.
    notices = finished_notices(dsn, lambda: client.cancel_task(parent))
    assert sorted(sorted(map(int, p.split(","))) for p in notices) == sorted([[parent], few])
    # Over 400 ids might not fit in a payload: it names none, and every wait checks.
    assert sorted(finished_notices(dsn, lambda: client.cancel_task(other))) == ["", str(other)]
    assert all(t["state"] == "cancelled" for t in client.wait_for_batch(many, timeout=DEADLINE))


def test_a_wait_is_not_woken_by_other_tasks_finishing(client, start_worker, waiter_queue):
    """Every wait checked again at each finish of any task: forty waits on their
    own tasks made each worker step cost forty queries."""
    parent, idle = idle_family(client)
    waiter = TaskQueueClient(local_queue=waiter_queue, poll_interval=60)
    listening(waiter_queue.notifier)
    log = StatementLog(waiter_queue.db)
    ended: list[object] = []
    waits = [[i] for i in idle[:SINGLE_WAITS]] + [idle[SINGLE_WAITS:]]
    threads = [
        threading.Thread(target=lambda ids=ids: ended.append(waiter.wait_for_batch(ids, 60)))
        for ids in waits
    ]
    for thread in threads:
        thread.start()
    poll(lambda: initial_checks_done(log), DEADLINE)
    before = len(log.calls)

    start_worker({"echo": echo}, concurrency=8)
    client.wait_for_batch(submit_numbered(client, DRAINED), timeout=DEADLINE)
    assert log.names()[before:] == []  # not one check for the 200 finishes of other tasks

    client.cancel_task(parent)  # its children's notice ends their waits, long before a poll
    for thread in threads:
        thread.join(DEADLINE)
    assert len(ended) == len(waits)


def test_an_async_wait_is_not_woken_by_other_tasks_finishing(dsn, client, start_worker):
    parent, idle = idle_family(client)
    waits = [[i] for i in idle[:SINGLE_WAITS]] + [idle[SINGLE_WAITS:]]

    async def scenario() -> tuple[list[str], int]:
        async with AsyncTaskQueueClient(dsn=dsn, poll_interval=60) as waiter:
            waiter.notifier.subscribe((FINISHED_CHANNEL,))  # listening before the waits
            await asyncio.wait_for(waiter.notifier.connected.wait(), DEADLINE)
            log = StatementLog(waiter.db)
            running = [asyncio.create_task(waiter.wait_for_batch(ids, 60)) for ids in waits]
            await asyncio.to_thread(poll, lambda: initial_checks_done(log), DEADLINE)
            before = len(log.calls)
            start_worker({"echo": echo}, concurrency=8)
            ids = submit_numbered(client, DRAINED)
            await asyncio.to_thread(client.wait_for_batch, ids, DEADLINE)
            quiet = log.names()[before:]
            await asyncio.to_thread(client.cancel_task, parent)
            ended = await asyncio.wait_for(asyncio.gather(*running), DEADLINE)
            return quiet, len(ended)

    quiet, ended = asyncio.run(scenario())
    assert quiet == []  # not one check for the 200 finishes of other tasks
    assert ended == len(waits)


def test_a_notice_naming_no_task_or_unreadable_and_a_reconnect_wake_a_wait(
    conn, client, waiter_queue
):
    task_id = client.submit_task("nobody_runs")
    waiter = TaskQueueClient(local_queue=waiter_queue, poll_interval=60)
    listening(waiter_queue.notifier)
    log = StatementLog(waiter_queue.db)
    ended: list[object] = []
    thread = threading.Thread(target=lambda: ended.append(waiter.wait_for_task(task_id, 60)))
    thread.start()

    def checks() -> int:
        return log.names().count("get_tasks")

    poll(lambda: checks() == 1, DEADLINE)
    notify = "SELECT pg_notify(%s, %s)"
    conn.execute(notify, [FINISHED_CHANNEL, str(task_id + 1)])  # another task's: no check
    conn.execute(notify, [FINISHED_CHANNEL, ""])  # any task may have finished
    poll(lambda: checks() >= 2, DEADLINE)
    conn.execute(notify, [FINISHED_CHANNEL, "not ids"])
    poll(lambda: checks() >= 3, DEADLINE)
    conn.execute("SELECT pg_terminate_backend(%s)", [waiter_queue.notifier.backend_pid])
    poll(lambda: checks() >= 4, DEADLINE)  # what was sent while it was away is lost
    assert checks() == 4
    client.cancel_task(task_id)
    thread.join(DEADLINE)
    assert ended and ended[0]["state"] == "cancelled"
