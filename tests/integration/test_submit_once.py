"""A submit call whose reply is lost neither loses nor doubles its tasks
(issue 17, findings 3 and 8)."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from omnispindle import AsyncTaskQueueClient, DatabaseUnavailableError
from omnispindle._db.query import Pipelined, Query
from omnispindle._maintenance.sweeper import Sweeper, SweeperConfig

SUBMITS = {"submit_tasks", "insert_tasks_bulk"}


def is_submit(operation) -> bool:
    if isinstance(operation, Pipelined):
        return True
    return isinstance(operation, Query) and operation.statement.name in SUBMITS


def fail_first_submit(db, monkeypatch, *, after_commit: bool, unsent: bool = False):
    """The first submission fails as a lost connection would: after its commit
    (the reply lost) or before it ran."""
    real_run = db.run
    failed = []

    def run(operation, **kwargs):
        if failed or not is_submit(operation):
            return real_run(operation, **kwargs)
        failed.append(operation)
        if after_commit:
            real_run(operation, **kwargs)
        error = DatabaseUnavailableError("the database is unavailable: connection lost")
        error.unsent = unsent
        raise error

    monkeypatch.setattr(db, "run", run)
    return failed


def tasks(conn) -> list[tuple[str, int]]:
    return conn.execute(
        "SELECT parameters->>'n', count(*) FROM omnispindle.tasks GROUP BY 1 ORDER BY 1"
    ).fetchall()


@pytest.mark.parametrize("after_commit", [True, False], ids=["reply lost", "never ran"])
def test_a_lost_submit_is_stored_once_and_answered(client, conn, monkeypatch, after_commit):
    failed = fail_first_submit(client.queue.db, monkeypatch, after_commit=after_commit)
    task_id = client.submit_task("t", {"n": 1})
    assert failed
    assert client.get_task(task_id)["parameters"] == {"n": 1}
    assert tasks(conn) == [("1", 1)]


@pytest.mark.parametrize("size", [3, 2500], ids=["one statement", "pipelined chunks"])
def test_a_lost_batch_is_stored_once_and_answered_in_order(client, conn, monkeypatch, size):
    failed = fail_first_submit(client.queue.db, monkeypatch, after_commit=True)
    ids = client.submit_batch([{"task_type": "t", "parameters": {"n": n}} for n in range(size)])
    assert failed
    assert len(ids) == size == len(set(ids))
    assert [client.get_task(i)["parameters"]["n"] for i in (ids[0], ids[-1])] == [0, size - 1]
    assert conn.execute("SELECT count(*) FROM omnispindle.tasks").fetchone()[0] == size


def test_a_submit_that_reached_nothing_fails_at_once(client, conn, monkeypatch):
    fail_first_submit(client.queue.db, monkeypatch, after_commit=False, unsent=True)
    with pytest.raises(DatabaseUnavailableError):
        client.submit_task("t", {"n": 1})
    assert tasks(conn) == []


def test_the_async_client_submits_once_too(queue, conn, monkeypatch):
    async def main() -> int:
        async with AsyncTaskQueueClient(local_queue=queue) as client:
            real_run = client.db.run
            failed = []

            async def run(operation, **kwargs):
                result = await real_run(operation, **kwargs)
                if is_submit(operation) and not failed:
                    failed.append(operation)
                    raise DatabaseUnavailableError("the database is unavailable: reply lost")
                return result

            monkeypatch.setattr(client.db, "run", run)
            task_id = await client.submit_task("t", {"n": 7})
            assert failed
            return task_id

    task_id = asyncio.run(main())
    assert tasks(conn) == [("7", 1)]
    assert conn.execute("SELECT id FROM omnispindle.tasks").fetchone()[0] == task_id


def test_the_submission_records_are_kept_an_hour(client, queue, conn):
    client.submit_task("t")
    conn.execute(
        "INSERT INTO omnispindle.submissions (key, part, task_ids, created_at) "
        "VALUES (gen_random_uuid(), 0, '{1}', now() - interval '61 minutes')"
    )
    assert conn.execute("SELECT count(*) FROM omnispindle.submissions").fetchone()[0] == 2
    Sweeper(queue.db, SweeperConfig()).run_once()
    assert conn.execute("SELECT count(*) FROM omnispindle.submissions").fetchone()[0] == 1


def test_a_submit_inside_the_callers_transaction_records_nothing(client, dsn, conn):
    with psycopg.connect(dsn) as own:
        client.submit_task("t", connection=own)
    assert conn.execute("SELECT count(*) FROM omnispindle.submissions").fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM omnispindle.tasks").fetchone()[0] == 1
