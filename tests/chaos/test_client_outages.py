"""What a client in an app sees while its database is away: waits that end at
their deadline, a stream begun during the outage that rides it out, and a
worker started during it that starts working once the database is back, on a
server of the test's own."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable

import pytest

from omnispindle import (
    AsyncTaskQueueClient,
    DatabaseUnavailableError,
    TaskQueue,
    TaskQueueClient,
    WorkerClient,
)
from omnispindle._worker._stop_bound import LAST_WORDS

from ..acceptance import servers
from ..acceptance.workers import poll

pytestmark = pytest.mark.chaos

WAIT = 1.0  # each wait's timeout: shorter than the pool's 5 s wait for a connection
LATE = 1.0  # what a wait may take past its timeout on a busy machine
OUTAGE = 7.0  # longer than the pool's 5 s wait for a connection
DEADLINE = 60


@pytest.fixture
def server():
    with servers.own_server(migrated=True) as own:
        yield own


def seconds_until_unavailable(call: Callable[[], object]) -> float:
    """How long ``call`` took to raise DatabaseUnavailableError."""
    started = time.monotonic()
    with pytest.raises(DatabaseUnavailableError):
        call()
    return time.monotonic() - started


async def seconds_until_unavailable_async(call: Callable[[], Awaitable[object]]) -> float:
    started = time.monotonic()
    with pytest.raises(DatabaseUnavailableError):
        await call()
    return time.monotonic() - started


def test_a_wait_ends_at_its_deadline_while_the_database_is_away(server):
    """Each check waited out the pool's 5 s for a connection: a wait of 1 s took 5."""
    with TaskQueue(dsn=server.dsn) as queue:
        client = TaskQueueClient(local_queue=queue, poll_interval=0.2)
        task_id = client.submit_task("t")
        events = client.stream_task(task_id, timeout=WAIT)
        server.stop()
        try:
            took = {
                "wait_for_task": seconds_until_unavailable(
                    lambda: client.wait_for_task(task_id, timeout=WAIT)
                ),
                "wait_for_batch": seconds_until_unavailable(
                    lambda: client.wait_for_batch([task_id], timeout=WAIT)
                ),
                "stream_task": seconds_until_unavailable(lambda: list(events)),
            }
        finally:
            server.start()
    assert max(took.values()) < WAIT + LATE, took


def test_an_asyncio_wait_ends_at_its_deadline_while_the_database_is_away(server):
    async def scenario() -> dict[str, float]:
        async with AsyncTaskQueueClient(dsn=server.dsn, poll_interval=0.2) as client:
            task_id = await client.submit_task("t")
            server.stop()
            try:
                return {
                    "wait_for_task": await seconds_until_unavailable_async(
                        lambda: client.wait_for_task(task_id, timeout=WAIT)
                    ),
                    "wait_for_batch": await seconds_until_unavailable_async(
                        lambda: client.wait_for_batch([task_id], timeout=WAIT)
                    ),
                    "stream_task": await seconds_until_unavailable_async(
                        lambda: _all_events(client.stream_task(task_id, timeout=WAIT))
                    ),
                }
            finally:
                server.start()

    took = asyncio.run(scenario())
    assert max(took.values()) < WAIT + LATE, took


async def _all_events(events) -> list[object]:
    return [event async for event in events]


def test_a_stream_begun_while_the_database_is_away_rides_the_outage_out(server):
    """stream_task looked the task up before streaming, and raised
    DatabaseUnavailableError once the pool's 5 s wait ran out."""
    with TaskQueue(dsn=server.dsn) as queue:
        client = TaskQueueClient(local_queue=queue, poll_interval=0.2)
        task_id = client.submit_task("t")
        outcome: dict[str, object] = {}

        def stream() -> None:
            try:
                outcome["events"] = list(client.stream_task(task_id, timeout=DEADLINE))
            except Exception as exc:  # the test reports it
                outcome["error"] = exc

        server.stop()
        streaming = threading.Thread(target=stream)
        try:
            streaming.start()
            threading.Event().wait(OUTAGE)  # the outage itself
        finally:
            server.start()
        poll(lambda: _cancelled(client, task_id), timeout=DEADLINE)
        streaming.join(DEADLINE)
    assert "error" not in outcome, outcome
    assert outcome["events"][-1]["task"]["state"] == "cancelled"


def _cancelled(client: TaskQueueClient, task_id: int) -> bool:
    """Cancel the task once the pool reaches the database again."""
    try:
        return client.cancel_task(task_id)["cancelled"]
    except DatabaseUnavailableError:
        return False


def test_a_worker_started_while_the_database_is_away_runs_once_it_is_back(server):
    """start() raised DatabaseUnavailableError when its registration found no
    connection: the worker's thread ended and no task of the app ever ran."""
    with TaskQueue(dsn=server.dsn) as queue:
        client = TaskQueueClient(local_queue=queue, poll_interval=0.2)
        worker = WorkerClient(local_queue=queue, poll_interval=0.2)
        worker.register_task_executor("t", lambda task: {"ran": True})
        ended: dict[str, object] = {}

        def run() -> None:
            try:
                worker.start()
            except Exception as exc:  # the test reports it
                ended["error"] = exc

        server.stop()
        running = threading.Thread(target=run)
        try:
            running.start()
            threading.Event().wait(OUTAGE)  # the outage itself
        finally:
            server.start()
        try:
            assert "error" not in ended, ended
            task_id = poll(lambda: _submitted(client), timeout=DEADLINE)
            assert client.wait_for_task(task_id, timeout=DEADLINE)["result"] == {"ran": True}
        finally:
            worker.stop(timeout=30)
            running.join(DEADLINE)
    assert "error" not in ended, ended


def test_a_worker_stopped_while_it_waits_for_the_database_ends(server):
    with TaskQueue(dsn=server.dsn) as queue:
        worker = WorkerClient(local_queue=queue, poll_interval=0.2)
        worker.register_task_executor("t", lambda task: None)
        server.stop()
        try:
            running = threading.Thread(target=worker.start)
            running.start()
            poll(lambda: queue.db.outage.ongoing, timeout=DEADLINE)  # it found no database
            worker.stop(timeout=DEADLINE)
            running.join(DEADLINE)
            assert not running.is_alive()
        finally:
            server.start()


def _submitted(client: TaskQueueClient) -> int | None:
    try:
        return client.submit_task("t")
    except DatabaseUnavailableError:
        return None


def test_a_worker_stopped_while_the_database_is_away_ends_within_its_shutdown_timeout(server):
    """start() returned 11 s and more after stop(): each heartbeat while stopping,
    and the hand-back after them, waited the pool's 5 s for a connection past the
    shutdown timeout. The task still running is left to its lease."""
    shutdown = 6.0  # at least the pool's wait for a connection, which may be under way
    with TaskQueue(dsn=server.dsn) as queue:
        client = TaskQueueClient(local_queue=queue, poll_interval=0.2)
        release = threading.Event()
        worker = WorkerClient(
            local_queue=queue, poll_interval=0.2, lease_timeout=3, shutdown_timeout=shutdown
        )
        worker.register_task_executor("t", lambda task: release.wait(DEADLINE) and None)
        running = threading.Thread(target=worker.start)
        running.start()
        try:
            task_id = client.submit_task("t")
            poll(lambda: client.get_task(task_id)["state"] == "running", timeout=DEADLINE)
            server.stop()
            poll(lambda: queue.db.outage.ongoing, timeout=DEADLINE)  # a heartbeat found none
            started = time.monotonic()
            worker.stop(timeout=DEADLINE)
            took = time.monotonic() - started
        finally:
            release.set()
            server.start()
            running.join(DEADLINE)
    assert not running.is_alive()
    assert took < shutdown + LAST_WORDS + LATE, took
