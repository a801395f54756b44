"""Settings a user's database or role carries by default, which this package's
own sessions must not inherit where its statements depend on them."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict


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
