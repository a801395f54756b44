"""Pausing a task type: its tasks wait, running ones finish, resume wakes workers."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid

import psycopg
import pytest

from omnispindle import AsyncTaskQueueClient, ValidationError
from omnispindle._db import queries as q

from .test_roles import command

DEADLINE = 30


def states(client, ids):
    return [client.get_task(i)["state"] for i in ids]


def test_a_paused_type_waits_while_running_ones_finish_and_resume_wakes_an_idle_worker(
    client, start_worker
):
    release = threading.Event()
    started = threading.Event()

    def held(task):
        started.set()
        release.wait(DEADLINE)
        return {"held": True}

    # Every timer far longer than the test: only a notification wakes it.
    start_worker(
        {"held": held, "other": lambda task: {"ok": 1}},
        concurrency=2,
        poll_interval=600,
        lease_timeout=900,
        heartbeat_interval=600,
        sweep_interval=None,
        schedule_interval=None,
    )
    running = client.submit_task("held")
    assert started.wait(DEADLINE)
    assert client.pause_task_type("held", reason="maintenance") is True
    waiting = client.submit_task("held")
    other = client.submit_task("other")
    assert client.wait_for_task(other, timeout=DEADLINE)["state"] == "succeeded"
    release.set()
    assert client.wait_for_task(running, timeout=DEADLINE)["result"] == {"held": True}
    assert client.get_task(waiting)["state"] == "pending"

    assert client.resume_task_type("held") is True
    began = time.monotonic()
    assert client.wait_for_task(waiting, timeout=DEADLINE)["state"] == "succeeded"
    assert time.monotonic() - began < 10


def test_no_claim_after_a_pause_takes_the_paused_type(client, queue, conn):
    paused = [client.submit_task("bulk", {"n": n}) for n in range(20)]
    others = [client.submit_task("other") for _ in range(3)]
    client.pause_task_type("bulk")
    claim = q.tasks.claim_tasks(
        task_types=["bulk", "other"],
        capabilities=[],
        limit=100,
        worker_id=uuid.uuid4(),
        lease_seconds=30,
    )
    assert sorted(row["id"] for row in queue.db.run(claim)) == others
    step = conn.execute(
        "SELECT task_type FROM omnispindle.complete_and_claim("
        "'{}', '{}', '{}', '{bulk,other}', '{}', 100, gen_random_uuid(), 30, NULL, NULL)"
    ).fetchall()
    assert step == []
    assert set(states(client, paused)) == {"pending"}
    client.resume_task_type("bulk")
    again = conn.execute(
        "SELECT count(*) FROM omnispindle.claim_tasks('{bulk}', '{}', 100, gen_random_uuid(), 30)"
    ).fetchone()
    assert again == (20,)


def test_the_sql_functions_say_whether_anything_changed(conn):
    def call(statement, *args):
        return conn.execute(statement, args).fetchone()[0]

    assert call("SELECT omnispindle.pause_task_type(%s, %s)", "t", "why") is True
    assert call("SELECT omnispindle.pause_task_type(%s, %s)", "t", "again") is False
    row = conn.execute("SELECT task_type, reason FROM omnispindle.paused_task_types").fetchall()
    assert row == [("t", "why")]
    assert call("SELECT omnispindle.resume_task_type(%s)", "t") is True
    assert call("SELECT omnispindle.resume_task_type(%s)", "t") is False


@pytest.mark.parametrize(
    "statement",
    [
        "SELECT omnispindle.pause_task_type(NULL)",
        "SELECT omnispindle.pause_task_type('')",
        "SELECT omnispindle.pause_task_type(repeat('x', 201))",
        "SELECT omnispindle.pause_task_type('t', repeat('x', 1001))",
        "SELECT omnispindle.resume_task_type('')",
    ],
)
def test_the_sql_functions_refuse_bad_input(conn, statement):
    with pytest.raises(psycopg.Error) as refused:
        conn.execute(statement)
    assert refused.value.sqlstate == "OS005"
    assert conn.execute("SELECT count(*) FROM omnispindle.paused_task_types").fetchone() == (0,)


@pytest.mark.parametrize(
    ("task_type", "reason"), [("", None), (None, None), ("x" * 201, None), ("t", 5), ("t", "\0")]
)
def test_bad_input_is_a_validation_error_that_changes_nothing(client, task_type, reason):
    with pytest.raises(ValidationError):
        client.pause_task_type(task_type, reason=reason)
    with pytest.raises(ValidationError):
        client.resume_task_type(task_type if reason is None else 7)
    assert client.paused_task_types() == []


def test_the_async_client_pauses_and_resumes(dsn):
    async def main():
        async with AsyncTaskQueueClient(dsn=dsn) as client:
            assert await client.pause_task_type("t", "why") is True
            [paused] = await client.paused_task_types()
            assert (paused["task_type"], paused["reason"]) == ("t", "why")
            assert await client.resume_task_type("t") is True
            assert await client.resume_task_type("t") is False
            return await client.paused_task_types()

    assert asyncio.run(main()) == []


def test_the_commands_pause_resume_and_show_paused_types(dsn, client):
    done = command("pause", "reports", "--reason", "quota", "--dsn", dsn)
    assert (done.returncode, done.stdout) == (0, "task type reports paused\n")
    again = command("pause", "reports", "--dsn", dsn)
    assert again.stdout == "task type reports was already paused\n"
    status = command("status", "--json", "--dsn", dsn)
    [paused] = json.loads(status.stdout)["paused"]
    assert (paused["task_type"], paused["reason"]) == ("reports", "quota")
    assert "Paused task types" in command("status", "--dsn", dsn).stdout
    assert command("resume", "reports", "--dsn", dsn).stdout == "task type reports resumed\n"
    resumed = command("resume", "reports", "--json", "--dsn", dsn)
    assert json.loads(resumed.stdout)["changed"] is False
    assert "was not paused" in resumed.stdout


def test_a_bad_type_on_the_command_line_is_a_usage_error(dsn, client):
    done = command("pause", "", "--dsn", dsn)
    assert done.returncode == 2
    assert "task_type" in done.stderr
    assert client.paused_task_types() == []
