"""Outages seen from the client: typed errors within seconds, waits that ride
through restarts, a listener that comes back at once and logs each outage once,
and a frozen listener replaced (issue 17)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
import time

import psycopg
import pytest

from omnispindle import (
    DatabaseUnavailableError,
    TaskQueue,
    TaskQueueClient,
    ValidationError,
    WorkerClient,
)
from omnispindle._core import defaults
from omnispindle._db.async_notifier import AsyncNotifier
from omnispindle._db.async_pool import AsyncDatabase
from omnispindle._db.notifier import FINISHED_CHANNEL, READY_CHANNEL, Notifier
from omnispindle._db.pool import Database
from omnispindle._db.schema_state import schema_state

from . import servers
from .workers import poll

DEADLINE = 120


@pytest.fixture
def server():
    with servers.own_server(migrated=True) as own:
        yield own


@pytest.fixture
def queue(server):
    task_queue = TaskQueue(dsn=server.dsn)
    yield task_queue
    task_queue.shutdown()


def test_an_outage_is_a_typed_error_within_seconds(server, queue):
    """Outages surfaced as AdminShutdown, OperationalError or a PoolTimeout after 30 s."""
    client = TaskQueueClient(local_queue=queue)
    task_id = client.submit_task("t")
    server.stop()
    try:
        started = time.monotonic()
        with pytest.raises(DatabaseUnavailableError):
            client.submit_task("t")
        assert time.monotonic() - started < 15
        with pytest.raises(DatabaseUnavailableError):
            client.get_task(task_id)
        with pytest.raises(DatabaseUnavailableError):
            client.wait_for_task(task_id, timeout=2)
        with pytest.raises(DatabaseUnavailableError):
            TaskQueueClient(dsn=server.dsn)
    finally:
        server.start()
    # The same client works again once the database is back.
    assert poll(lambda: _submitted(client), timeout=30) > task_id


def test_dead_pooled_connections_are_replaced_before_use(server, monkeypatch):
    """The first call on each pooled connection killed by a restart failed."""
    from omnispindle._db import idle_check

    monkeypatch.setattr(idle_check, "IDLE_BEFORE_CHECK", 0.0)  # every connection counts as idle
    queue = TaskQueue(dsn=server.dsn)
    try:
        client = TaskQueueClient(local_queue=queue)
        client.submit_task("t")
        for how in ("fast", "immediate"):
            server.restart(how)
            ids = [client.submit_task("t") for _ in range(5)]
            assert [client.get_task(i)["state"] for i in ids] == ["pending"] * 5
    finally:
        queue.shutdown()


def test_a_read_is_run_again_when_its_connection_dies_under_it(server, queue):
    """Reads failed on each pooled connection a kill or restart left dead."""
    client = TaskQueueClient(local_queue=queue)
    task_id = client.submit_task("t")
    with psycopg.connect(server.dsn, autocommit=True) as killer:
        for _ in range(20):
            client.get_task(task_id)  # the pooled connection was just used: no idle check
            killer.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                "AND backend_type = 'client backend' AND query NOT LIKE 'LISTEN%%'"
            )
            assert client.get_task(task_id)["state"] == "pending"
            assert client.list_periodic_tasks() == []


def test_the_pool_timeout_is_the_callers_to_choose(server):
    with pytest.raises(ValidationError):
        TaskQueue(dsn=server.dsn, pool_timeout=0)
    queue = TaskQueue(dsn=server.dsn, pool_timeout=1.0)
    client = TaskQueueClient(local_queue=queue)
    task_id = client.submit_task("t")
    server.stop()
    try:
        for _ in range(3):  # the first may meet a dead pooled connection at once
            started = time.monotonic()
            with pytest.raises(DatabaseUnavailableError):
                client.get_task(task_id)
        assert time.monotonic() - started < 3
    finally:
        server.start()
        queue.shutdown()


@pytest.mark.parametrize("flavour", ["blocking", "asyncio"])
def test_a_call_queued_while_the_pool_reconnects_gets_through_once_the_database_is_back(
    server, monkeypatch, flavour
):
    """psycopg_pool tries to reconnect for RECONNECT_WINDOW seconds and starts again
    only when a caller starts to wait: a call that queued during the first run waited
    out its whole timeout (30 s here), though the database was back long before."""
    from omnispindle._db import idle_check

    monkeypatch.setattr(idle_check, "IDLE_BEFORE_CHECK", 0.0)  # find the dead connection first
    call = _blocking_call if flavour == "blocking" else _asyncio_call
    outcome: dict[str, object] = {}
    with call(server.dsn, outcome) as begin:
        server.stop()
        try:
            begin.set()
            threading.Event().wait(defaults.RECONNECT_WINDOW + 2)  # the outage itself
        finally:
            server.start()
        back = time.monotonic()
    assert outcome["error"] is None
    assert outcome["finished"] - back < 8


@contextlib.contextmanager
def _blocking_call(dsn, outcome):
    """A pool opened on ``dsn``; once ``begin`` is set, one call with a 30 s timeout."""
    database = Database(dsn, timeout=30)
    database.run(schema_state())
    begin = threading.Event()
    thread = threading.Thread(
        target=_record, args=(outcome, begin, lambda: database.run(schema_state()))
    )
    thread.start()
    try:
        yield begin
        thread.join(40)
    finally:
        begin.set()
        database.close()


@contextlib.contextmanager
def _asyncio_call(dsn, outcome):
    """:func:`_blocking_call` through the asyncio pool, on a loop of its own."""
    database = AsyncDatabase(dsn, timeout=30)
    loop = asyncio.new_event_loop()
    loop.run_until_complete(database.open())
    loop.run_until_complete(database.run(schema_state()))
    begin = threading.Event()
    call = lambda: loop.run_until_complete(database.run(schema_state()))  # noqa: E731
    thread = threading.Thread(target=_record, args=(outcome, begin, call))
    thread.start()
    try:
        yield begin
        thread.join(40)
    finally:
        begin.set()
        thread.join(40)
        loop.run_until_complete(database.close())
        loop.close()


def _record(outcome, begin, call) -> None:
    begin.wait(60)
    try:
        call()
        outcome["error"] = None
    except Exception as exc:  # the test reports it
        outcome["error"] = exc
    outcome["finished"] = time.monotonic()


def _submitted(client: TaskQueueClient) -> int | None:
    try:
        return client.submit_task("t")
    except DatabaseUnavailableError:
        return None


def _cause_outage(server, how: str) -> None:
    if how == "stop for 6 s":
        server.stop()
        threading.Event().wait(6)  # the outage itself
        server.start()
    else:
        server.restart(how)


@pytest.mark.parametrize("how", ["fast", "immediate", "stop for 6 s"])
def test_a_wait_rides_through_a_restart(server, queue, how):
    """wait_for_task raised AdminShutdown, OperationalError or PoolTimeout across restarts."""
    release = threading.Event()
    worker = WorkerClient(local_queue=queue, poll_interval=0.2)
    worker.register_task_executor("slow", lambda task: release.wait(DEADLINE) and {"ok": True})
    running = threading.Thread(target=worker.start, daemon=True)
    running.start()
    client = TaskQueueClient(local_queue=queue, poll_interval=0.2)
    outcome: dict[str, object] = {}
    try:
        task_id = client.submit_task("slow")
        poll(lambda: client.get_task(task_id)["state"] == "running", timeout=30)

        def wait() -> None:
            try:
                outcome["record"] = client.wait_for_task(task_id, timeout=DEADLINE)
            except Exception as exc:
                outcome["error"] = exc

        waiter = threading.Thread(target=wait)
        waiter.start()
        _cause_outage(server, how)
        release.set()
        waiter.join(DEADLINE)
        assert "error" not in outcome, outcome
        assert outcome["record"]["state"] == "succeeded"
        stream = list(client.stream_task(task_id, timeout=DEADLINE))
        assert stream[-1]["kind"] == "final"
    finally:
        release.set()
        worker.stop(timeout=30)
        running.join(30)


def test_the_listener_comes_back_at_once_and_logs_each_outage_once(server, caplog):
    """The backoff reset was unreachable: reconnects slowed after every loss, and only
    the first loss was logged."""
    caplog.set_level(logging.WARNING, logger="omnispindle.notifier")
    notifier = Notifier(server.dsn)
    notifier.subscribe(FINISHED_CHANNEL, lambda: None)
    try:
        assert notifier.connected.wait(30)
        delays = []
        for _ in range(6):
            pid = notifier.backend_pid
            server.restart("fast")
            back = time.monotonic()
            poll(lambda pid=pid: notifier.backend_pid not in (None, pid), timeout=30)
            delays.append(time.monotonic() - back)
        assert max(delays) < 1.5, delays
        lines = [r.getMessage() for r in caplog.records if r.name == "omnispindle.notifier"]
        assert sum("lost the database" in line for line in lines) == 6, lines
        assert sum("again after" in line for line in lines) == 6, lines
    finally:
        notifier.close()


def test_a_frozen_listener_is_found_and_replaced(server):
    """A half-open LISTEN connection was never detected."""
    notifier = Notifier(server.dsn, probe_after=0.5, probe_timeout=1.0)
    woken = threading.Event()
    notifier.subscribe(READY_CHANNEL, woken.set)
    assert notifier.connected.wait(30)
    frozen = notifier.backend_pid
    try:
        os.kill(frozen, signal.SIGSTOP)
    except PermissionError:
        notifier.close()
        pytest.skip("this user may not signal the server's processes")
    try:
        poll(lambda: notifier.backend_pid not in (None, frozen), timeout=30)
        with psycopg.connect(server.dsn, autocommit=True) as conn:
            woken.clear()
            conn.execute("NOTIFY omnispindle_ready")
            poll(woken.is_set, timeout=10)
    finally:
        os.kill(frozen, signal.SIGCONT)
        notifier.close()


def test_a_frozen_async_listener_is_found_and_replaced(server):
    """The async client's LISTEN connection had no probe: frozen, it woke no waiter again."""

    async def scenario() -> None:
        notifier = AsyncNotifier(server.dsn, probe_after=0.5, probe_timeout=1.0)
        notifier.open()
        woken = notifier.subscribe([FINISHED_CHANNEL])
        await asyncio.wait_for(notifier.connected.wait(), 30)
        frozen = notifier.backend_pid
        assert frozen is not None
        try:
            os.kill(frozen, signal.SIGSTOP)
        except PermissionError:
            await notifier.close()
            pytest.skip("this user may not signal the server's processes")
        try:
            deadline = time.monotonic() + 30
            while notifier.backend_pid in (None, frozen):
                assert time.monotonic() < deadline, "the frozen listener was never replaced"
                await asyncio.sleep(0.05)
            woken.clear()
            async with await psycopg.AsyncConnection.connect(server.dsn, autocommit=True) as conn:
                await conn.execute("NOTIFY omnispindle_finished")
            await asyncio.wait_for(woken.wait(), 10)
        finally:
            os.kill(frozen, signal.SIGCONT)
            await notifier.close()

    asyncio.run(scenario())


def produce_while(client: TaskQueueClient, fault) -> dict[int, object]:
    """Submit task n = 0, 1, ... in a loop while ``fault(returned)`` runs; each call's
    outcome by n: its id, or the error it raised."""
    outcomes: dict[int, object] = {}
    stop = threading.Event()

    def produce() -> None:
        n = 0
        while not stop.is_set():
            try:
                outcomes[n] = client.submit_task("t", {"n": n})
            except Exception as exc:
                outcomes[n] = exc
            n += 1

    producer = threading.Thread(target=produce)
    producer.start()
    try:
        fault(lambda: sum(isinstance(v, int) for v in list(outcomes.values())))
    finally:
        stop.set()
        producer.join(DEADLINE)
    return outcomes


def assert_each_call_once(dsn: str, outcomes: dict[int, object]) -> None:
    """Every id returned exists exactly once; every call that raised, raised a typed
    error and left no task; no task exists twice or without its call."""
    with psycopg.connect(dsn) as conn:
        stored = {
            n: (count, first)
            for n, count, first in conn.execute(
                "SELECT (parameters->>'n')::int, count(*), min(id) FROM omnispindle.tasks "
                "GROUP BY 1"
            )
        }
    assert all(count == 1 for count, _ in stored.values()), "a task was stored twice"
    assert set(stored) <= set(outcomes)
    for n, outcome in outcomes.items():
        if isinstance(outcome, int):
            assert stored.get(n) == (1, outcome), (n, outcome)
        else:
            assert isinstance(outcome, DatabaseUnavailableError), repr(outcome)
            assert n not in stored, f"call {n} raised {outcome!r}, but its task exists"


def test_a_producer_loop_across_restarts_stores_each_call_once(server, queue):
    client = TaskQueueClient(local_queue=queue)

    def restarts(returned) -> None:
        for how in ("immediate", "immediate", "immediate", "fast", "fast"):
            before = returned()
            poll(lambda before=before: returned() >= before + 100, timeout=DEADLINE)
            server.restart(how)
        before = returned()
        poll(lambda: returned() >= before + 100, timeout=DEADLINE)

    outcomes = produce_while(client, restarts)
    assert_each_call_once(server.dsn, outcomes)


def test_a_producer_loop_across_backend_kills_stores_each_call_once(server, queue):
    client = TaskQueueClient(local_queue=queue)

    def kills(returned) -> None:
        with psycopg.connect(server.dsn, autocommit=True) as killer:
            for _ in range(20):
                before = returned()
                poll(lambda before=before: returned() >= before + 50, timeout=DEADLINE)
                killer.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )

    outcomes = produce_while(client, kills)
    assert_each_call_once(server.dsn, outcomes)
