"""Settings a user's database or role carries by default, which this package's
own sessions must not inherit where its statements depend on them."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from omnispindle import DatabaseUnavailableError, ReadOnlyDatabaseError


@pytest.fixture
def dsn(dsn: str, server_dsn: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """The test's database, with the settings given (``indirect=True``) as its
    defaults for every session opened after."""
    name = conninfo_to_dict(dsn)["dbname"]
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        for setting, value in request.param.items():
            conn.execute(
                sql.SQL("ALTER DATABASE {} SET {} = {}").format(
                    sql.Identifier(name), sql.Identifier(setting), sql.Literal(value)
                )
            )
    yield dsn


@pytest.mark.parametrize(
    "dsn",
    [{"DateStyle": "German"}, {"DateStyle": "SQL, DMY"}, {"DateStyle": "Postgres, MDY"}],
    indirect=True,
    ids=["german", "sql", "postgres"],
)
def test_a_database_whose_date_style_is_not_iso_runs_and_reads_tasks(client, start_worker, conn):
    assert conn.execute("SHOW DateStyle").fetchone()[0] != "ISO, MDY"
    start_worker({"echo": lambda task: {"got": task["parameters"]}})
    task_id = client.submit_task("echo", {"n": 1})
    task = client.wait_for_task(task_id, timeout=30)
    assert (task["state"], task["result"]) == ("succeeded", {"got": {"n": 1}})
    now = datetime.now(timezone.utc)
    assert abs(client.get_task(task_id)["created_at"] - now) < timedelta(minutes=1)
    later = client.submit_task("echo", {"n": 2}, delay=3600)
    assert abs(client.get_task(later)["run_after"] - (now + timedelta(hours=1))) < timedelta(
        minutes=1
    )


@pytest.mark.parametrize(
    "dsn",
    [{"client_encoding": "LATIN1"}, {"client_encoding": "SQL_ASCII"}],
    indirect=True,
    ids=["latin1", "sql_ascii"],
)
def test_a_database_whose_client_encoding_is_not_utf8_keeps_any_text(client, start_worker, conn):
    assert conn.execute("SHOW client_encoding").fetchone()[0] != "UTF8"
    start_worker({"echo": lambda task: {"got": task["parameters"]["text"] + " ✓"}})
    text = "naïve € 東京 🚀"
    task_id = client.submit_task("echo", {"text": text})
    task = client.wait_for_task(task_id, timeout=30)
    assert (task["state"], task["result"]) == ("succeeded", {"got": f"{text} ✓"})
    assert client.get_task(task_id)["parameters"] == {"text": text}


@pytest.mark.parametrize(
    "dsn",
    [
        {"default_transaction_isolation": "serializable"},
        {"default_transaction_isolation": "repeatable read"},
    ],
    indirect=True,
    ids=["serializable", "repeatable_read"],
)
def test_a_database_whose_default_isolation_is_stricter_submits_and_claims_without_failures(
    client, start_worker, conn, caplog
):
    assert conn.execute("SHOW default_transaction_isolation").fetchone()[0] != "read committed"
    caplog.set_level(logging.WARNING, logger="omnispindle")
    for _ in range(3):
        start_worker({"echo": lambda task: {"i": task["parameters"]["i"]}}, concurrency=4)
    errors: list[BaseException] = []

    def submit(first: int) -> list[int]:
        made, previous = [], None
        for i in range(first, first + 60):
            try:
                previous = client.submit_task(
                    "echo", {"i": i}, dependencies=[previous] if previous and i % 3 else None
                )
            except Exception as exc:  # every failure counted, whatever its type
                errors.append(exc)
                previous = None
            else:
                made.append(previous)
        return made

    with ThreadPoolExecutor(4) as threads:
        made = [task_id for ids in threads.map(submit, range(0, 240, 60)) for task_id in ids]
    assert errors == []
    finished = client.wait_for_batch(made, timeout=60)
    assert {task["state"] for task in finished} == {"succeeded"}
    refused = [r.getMessage() for r in caplog.records if "could not serialize" in r.getMessage()]
    assert refused == []


@pytest.mark.parametrize("dsn", [{"session_replication_role": "replica"}], indirect=True)
def test_a_database_whose_sessions_replicate_still_fires_the_queues_triggers(
    client, start_worker, conn, ready_notices
):
    assert conn.execute("SHOW session_replication_role").fetchone()[0] == "replica"

    def fail(task):
        raise RuntimeError("no")

    assert ready_notices(lambda: client.submit_task("idle")) != []
    start_worker({"fail": fail})
    parent = client.submit_task("fail", max_retries=0)
    child = client.submit_task("fail", dependencies=[parent])
    assert client.wait_for_task(parent, timeout=30)["state"] == "failed"
    # Cancelled by the parent's failure, in its transaction: not left blocked.
    assert client.get_task(child)["state"] == "cancelled"


@pytest.mark.parametrize("dsn", [{"default_transaction_read_only": "on"}], indirect=True)
def test_a_database_that_only_allows_reads_refuses_with_a_typed_error_and_workers_wait_it_out(
    client, start_worker, dsn, server_dsn, record_statements
):
    with pytest.raises(ReadOnlyDatabaseError, match="only allows reads") as refused:
        client.submit_task("echo", {"n": 1})
    assert isinstance(refused.value, DatabaseUnavailableError)
    statements = record_statements()
    worker = start_worker({"echo": lambda task: {"got": task["parameters"]}})
    # Refused at its registration, the worker tries again, as after a failover.
    deadline = time.monotonic() + 30
    while statements.names.count("register_worker") < 3:
        assert time.monotonic() < deadline, "the worker did not try to register again"
        time.sleep(0.05)
    assert worker._loop_thread is not None and worker._loop_thread.is_alive()
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("ALTER DATABASE {} RESET default_transaction_read_only").format(
                sql.Identifier(conninfo_to_dict(dsn)["dbname"])
            )
        )
    # Each refusal closes its connection: the pool's next ones can write.
    while True:
        try:
            task_id = client.submit_task("echo", {"n": 1})
            break
        except ReadOnlyDatabaseError:
            assert time.monotonic() < deadline + 30, "the pool kept its read-only connections"
    assert client.wait_for_task(task_id, timeout=30)["result"] == {"got": {"n": 1}}
