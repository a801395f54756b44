"""Idempotency keys: a repeated submission returns the unfinished task instead of a copy."""

from __future__ import annotations

import threading

import psycopg
import pytest

from omnispindle import TaskQueueClient, ValidationError, entry
from tests.acceptance.workers import poll


def task_count(conn) -> int:
    return conn.execute("SELECT count(*) FROM omnispindle.tasks").fetchone()[0]


def test_a_key_used_twice_yields_one_task(client, conn):
    first = client.submit_task("charge", {"order": 1}, idempotency_key="order-1")
    again = client.submit_task("charge", {"order": 1}, idempotency_key="order-1")
    assert first == again
    assert task_count(conn) == 1
    assert client.get_task(first)["idempotency_key"] == "order-1"


def test_different_keys_and_no_key_give_different_tasks(client, conn):
    ids = {client.submit_task("charge", idempotency_key="a"),
           client.submit_task("charge", idempotency_key="b"),
           client.submit_task("charge"), client.submit_task("charge")}
    assert len(ids) == 4 and task_count(conn) == 4


def test_once_the_task_has_finished_the_key_is_free_again(client, start_worker):
    first = client.submit_task("charge", idempotency_key="k")
    start_worker({"charge": lambda task: {"charged": task["task_id"]}})
    assert client.wait_for_task(first, timeout=30)["state"] == "succeeded"
    second = client.submit_task("charge", idempotency_key="k")
    assert second != first
    assert client.wait_for_task(second, timeout=30)["result"] == {"charged": second}


def test_concurrent_submissions_with_one_key_yield_one_task(dsn, queue, conn):
    clients = [TaskQueueClient(dsn=dsn) for _ in range(8)]
    barrier = threading.Barrier(len(clients))
    ids = []

    def submit(client):
        barrier.wait(timeout=30)
        ids.append(client.submit_task("charge", idempotency_key="race"))

    threads = [threading.Thread(target=submit, args=(c,)) for c in clients]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    finally:
        for client in clients:
            client.close()
    assert len(ids) == 8 and len(set(ids)) == 1
    assert task_count(conn) == 1


def test_a_key_held_by_an_uncommitted_transaction_waits_for_its_outcome(dsn, client, conn):
    with psycopg.connect(dsn) as app:
        with app.transaction():
            mine = client.submit_task("charge", idempotency_key="tx", connection=app)
            found = []
            other = threading.Thread(
                target=lambda: found.append(client.submit_task("charge", idempotency_key="tx")))
            other.start()
            poll(lambda: conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND datname = current_database()").fetchone()[0] == 1, timeout=30)
            assert other.is_alive(), "the second submission must wait for the first to commit"
        other.join(timeout=30)
    assert found == [mine] and task_count(conn) == 1


def test_after_a_rollback_the_key_makes_a_new_task(dsn, client, conn):
    with psycopg.connect(dsn) as app:
        with pytest.raises(RuntimeError), app.transaction():
            client.submit_task("charge", idempotency_key="rb", connection=app)
            raise RuntimeError("the request failed")
    task_id = client.submit_task("charge", idempotency_key="rb")
    assert client.get_task(task_id)["state"] == "pending" and task_count(conn) == 1


def test_batches_reuse_existing_tasks_and_depend_on_them(client, conn):
    existing = client.submit_task("fetch", idempotency_key="fetch-1")
    ids = client.submit_batch([
        {"task_type": "fetch", "idempotency_key": "fetch-1"},
        {"task_type": "parse", "dependencies": [entry(0)]},
        {"task_type": "fetch", "idempotency_key": "fetch-2"},
    ])
    assert ids[0] == existing
    assert client.get_task(ids[1])["dependencies"] == [existing]
    assert client.get_task(ids[1])["state"] == "blocked"
    assert task_count(conn) == 3


def test_a_key_repeated_within_one_batch_is_refused(client, conn):
    with pytest.raises(ValidationError, match="entry 2: idempotency_key 'x' is already used by entry 0"):
        client.submit_batch([{"task_type": "t", "idempotency_key": "x"}, {"task_type": "t"},
                             {"task_type": "t", "idempotency_key": "x"}])
    with pytest.raises(psycopg.Error, match="used twice") as raised:
        conn.execute("SELECT omnispindle.submit_tasks(ARRAY['t', 't'], ARRAY['{}', '{}']::jsonb[], "
                     "ARRAY[0, 0], ARRAY[1, 1], ARRAY[1.0, 1.0], ARRAY[NULL, NULL]::float8[], "
                     "ARRAY['[]', '[]']::jsonb[], ARRAY['[]', '[]']::jsonb[], "
                     "ARRAY['[]', '[]']::jsonb[], ARRAY[false, false], NULL, ARRAY['k', 'k'], NULL)")
    assert raised.value.sqlstate == "OS005"
    assert task_count(conn) == 0


@pytest.mark.parametrize("key", ["", 5, "x" * 201, "nul\x00"])
def test_bad_keys_are_refused(client, conn, key):
    with pytest.raises(ValidationError, match="idempotency_key"):
        client.submit_task("t", idempotency_key=key)
    assert task_count(conn) == 0
