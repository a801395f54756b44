"""A client or queue used after close() or shutdown(): told so, and nothing reopened."""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from omnispindle import (
    ConfigurationError,
    TaskQueue,
    TaskQueueClient,
    WaitTimeoutError,
    WorkerClient,
)
from omnispindle._db.notifier import FINISHED_CHANNEL

from ..acceptance.workers import poll


def other_sessions(conn: psycopg.Connection) -> int:
    """Sessions of this database besides ``conn``."""
    return conn.execute(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
    ).fetchone()[0]


CALLS: dict[str, Callable[[TaskQueueClient, int], Any]] = {
    "get_task": lambda client, task_id: client.get_task(task_id),
    "wait_for_task": lambda client, task_id: client.wait_for_task(task_id, timeout=1),
    "stream_task": lambda client, task_id: list(client.stream_task(task_id, timeout=1)),
    "submit_task": lambda client, task_id: client.submit_task("late"),
}


@pytest.mark.parametrize("call", CALLS)
def test_a_closed_client_opens_no_connection_again(dsn, conn, call):
    """A call after close() reopened the replica's pool (get_task answered from
    it) or a LISTEN connection and its thread, which nothing closed again, and
    the others read as an outage; each raises ConfigurationError now."""
    client = TaskQueueClient(dsn=dsn, read_dsn=dsn)
    task_id = client.submit_task("late")
    client.close()
    with pytest.raises(ConfigurationError, match="shut down"):
        CALLS[call](client, task_id)
    poll(lambda: other_sessions(conn) == 0, timeout=10)  # closed backends take a moment to go
    assert [t.name for t in threading.enumerate() if t.name.startswith("omnispindle")] == []


def test_a_client_let_go_without_close_leaves_no_listening_behind(dsn, conn):
    """A client dropped without close() kept its LISTEN connection and the thread
    holding it for as long as the process lived (20 clients made per request,
    each of which waited: 20 sessions and 20 threads), while its pool's
    connections closed; both go with the client now."""
    for _ in range(3):
        client = TaskQueueClient(dsn=dsn)
        with pytest.raises(WaitTimeoutError):
            client.wait_for_task(client.submit_task("unclaimed"), timeout=0.2)
        poll(client.queue.notifier.connected.is_set, timeout=10)
        del client
    gc.collect()
    poll(lambda: other_sessions(conn) == 0, timeout=10)
    poll(
        lambda: not [t for t in threading.enumerate() if t.name == "omnispindle-notifier"],
        timeout=10,
    )


WAITS: dict[str, Callable[[TaskQueueClient, int], Any]] = {
    "wait_for_task": lambda client, task_id: client.wait_for_task(task_id, timeout=60),
    "wait_for_batch": lambda client, task_id: client.wait_for_batch([task_id], timeout=60),
    "stream_task": lambda client, task_id: list(client.stream_task(task_id, timeout=60)),
}


def test_close_from_another_thread_ends_every_wait_at_once(dsn):
    """Threads waiting when another closed the client went on waiting until their
    next poll (30 s with poll_interval=30, a web server's whole grace period)
    before they raised; they raise ConfigurationError at once now."""
    client = TaskQueueClient(dsn=dsn, poll_interval=30)
    task_id = client.submit_task("unclaimed")
    raised: dict[str, BaseException] = {}

    def waiting(name: str) -> None:
        try:
            WAITS[name](client, task_id)
        except BaseException as exc:
            raised[name] = exc

    threads = [threading.Thread(target=waiting, args=(name,)) for name in WAITS]
    for thread in threads:
        thread.start()
    notifier = client.queue.notifier
    poll(lambda: notifier.subscriptions(FINISHED_CHANNEL) == len(WAITS), timeout=10)
    poll(notifier.connected.is_set, timeout=10)
    client.close()
    deadline = time.monotonic() + 10
    for thread in threads:
        thread.join(timeout=max(0.0, deadline - time.monotonic()))
    assert not any(thread.is_alive() for thread in threads)
    assert {name: type(exc) for name, exc in raised.items()} == dict.fromkeys(
        WAITS, ConfigurationError
    )


def test_a_queue_shut_down_under_its_worker_stops_it_first(dsn, conn):
    """A TaskQueue shut down (the end of its with block) while a worker ran on it
    closed the pool under the worker, which died with a traceback, its running task
    left running until its lease lapsed and its row active; the worker is stopped
    first now: the task is handed back and the worker marked stopped."""
    started, release = threading.Event(), threading.Event()

    def hold(task_data):
        started.set()
        release.wait(30)

    raised: list[BaseException] = []

    def run(worker: WorkerClient) -> None:
        try:
            worker.start()
        except BaseException as exc:
            raised.append(exc)

    with TaskQueue(dsn=dsn) as queue:
        worker = WorkerClient(local_queue=queue, name="on-a-queue", poll_interval=0.2)
        worker.register_task_executor("hold", hold)
        thread = threading.Thread(target=run, args=(worker,))
        thread.start()
        task_id = TaskQueueClient(local_queue=queue).submit_task("hold")
        assert started.wait(30)
    release.set()
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert raised == []
    task = conn.execute("SELECT state, attempts FROM omnispindle.tasks WHERE id = %s", [task_id])
    assert task.fetchone() == ("pending", 0)
    state = conn.execute("SELECT state FROM omnispindle.workers WHERE name = 'on-a-queue'")
    assert state.fetchone() == ("stopped",)
