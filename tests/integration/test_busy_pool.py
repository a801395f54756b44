"""A pool whose every connection is lent out is busy, not an outage: a call that
waits it out is told so, and nothing says the database was lost."""

from __future__ import annotations

import asyncio
import logging
import threading

import psycopg
import pytest

from omnispindle import AsyncTaskQueueClient, TaskQueue, TaskQueueClient
from omnispindle.errors import DatabaseUnavailableError

from ..acceptance.workers import poll

BUSY = "all 2 connections of the pool are in use"


def _waiting_on_locks(conn: psycopg.Connection) -> int:
    return conn.execute(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
    ).fetchone()[0]


def _hold_tasks(conn: psycopg.Connection) -> None:
    conn.execute("BEGIN")
    conn.execute("LOCK TABLE omnispindle.tasks IN ACCESS EXCLUSIVE MODE")


def test_a_busy_pool_is_said_busy_and_not_logged_as_an_outage(dsn, conn, caplog):
    queue = TaskQueue(dsn=dsn, pool_size=2, pool_timeout=0.5)
    client = TaskQueueClient(local_queue=queue)
    locker = psycopg.connect(dsn, autocommit=True)
    caplog.set_level(logging.WARNING, logger="omnispindle")
    try:
        _hold_tasks(locker)
        held = [threading.Thread(target=client.submit_task, args=("t",)) for _ in range(2)]
        for thread in held:
            thread.start()
        poll(lambda: _waiting_on_locks(conn) == 2, 10)
        with pytest.raises(DatabaseUnavailableError, match=BUSY):
            client.submit_task("t")
        locker.execute("COMMIT")
        for thread in held:
            thread.join(10)
        assert client.submit_task("t") > 0
    finally:
        locker.close()
        queue.shutdown()
    assert not [r for r in caplog.records if "lost the database" in r.getMessage()]


def test_a_busy_pool_of_the_asyncio_client_is_said_busy(dsn, conn, caplog):
    locker = psycopg.connect(dsn, autocommit=True)
    caplog.set_level(logging.WARNING, logger="omnispindle")

    async def run() -> None:
        async with AsyncTaskQueueClient(dsn=dsn, pool_size=2) as client:
            _hold_tasks(locker)
            held = [asyncio.create_task(client.submit_task("t")) for _ in range(2)]
            deadline = asyncio.get_running_loop().time() + 10
            while _waiting_on_locks(conn) < 2:
                assert asyncio.get_running_loop().time() < deadline, "submits never waited"
                await asyncio.sleep(0.05)
            # Said after the pool's 5 s: the asyncio client takes no pool_timeout.
            with pytest.raises(DatabaseUnavailableError, match=BUSY):
                await client.submit_task("t")
            locker.execute("COMMIT")
            await asyncio.wait_for(asyncio.gather(*held), 10)

    try:
        asyncio.run(run())
    finally:
        locker.close()
    assert not [r for r in caplog.records if "lost the database" in r.getMessage()]
