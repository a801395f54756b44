"""A client or queue used after close() or shutdown(): told so, and nothing reopened."""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from omnispindle import ConfigurationError, TaskQueueClient, WaitTimeoutError
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
