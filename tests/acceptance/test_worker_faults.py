"""Nothing lost when workers die or lose their database."""

from __future__ import annotations

import signal
import time

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from omnispindle import TaskQueue, TaskQueueClient
from omnispindle._maintenance.sweeper import Sweeper

from . import servers
from .workers import poll, start_worker_process

LEASE = 2.0
SWEEP = 0.2


@pytest.fixture
def ledger(conn):
    conn.execute("CREATE TABLE test_ledger (task_id bigint NOT NULL, pid integer NOT NULL)")
    return conn


def runs_per_task(conn) -> dict[int, int]:
    return dict(
        conn.execute("SELECT task_id, count(*) FROM test_ledger GROUP BY task_id").fetchall()
    )


def running_on(conn, name: str) -> int:
    return conn.execute(
        """
        SELECT count(*) FROM omnispindle.tasks t JOIN omnispindle.workers w ON w.id = t.worker_id
        WHERE t.state = 'running' AND w.name = %s""",
        [name],
    ).fetchone()[0]


def stop(*processes):
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    return [process.wait(timeout=60) for process in processes]


def fast_worker(dsn, name, *extra, ledger_dsn=None):
    return start_worker_process(
        dsn,
        "--name",
        name,
        "--lease-timeout",
        str(LEASE),
        "--heartbeat-interval",
        "0.5",
        "--sweep-interval",
        str(SWEEP),
        "--poll-interval",
        "0.2",
        *extra,
        ledger_dsn=ledger_dsn,
    )


def test_sigkill_of_a_worker_holding_many_tasks_loses_none(client, dsn, ledger, tmp_path):
    marker = tmp_path / "go"
    doomed = fast_worker(dsn, "doomed", "--concurrency", "30")
    ids = client.submit_batch([{"task_type": "hold", "parameters": {"marker": str(marker)}}] * 30)
    poll(
        lambda: running_on(ledger, "doomed") == 30 and len(runs_per_task(ledger)) == 30, timeout=60
    )
    doomed.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    marker.touch()
    rescuer = fast_worker(dsn, "rescuer", "--concurrency", "30")
    try:
        tasks = client.wait_for_batch(ids, timeout=LEASE + SWEEP + 30)
        recovered_in = time.monotonic() - killed_at
    finally:
        assert stop(rescuer) == [0]
    assert doomed.wait(timeout=10) == -signal.SIGKILL
    assert {t["state"] for t in tasks} == {"succeeded"}
    assert all(t["attempts"] == 2 and t["error"]["type"] == "LeaseExpired" for t in tasks)
    runs = runs_per_task(ledger)
    assert sorted(runs) == sorted(ids), "a task never ran"
    assert set(runs.values()) == {2}  # at least once: the killed attempt and the rescue
    assert recovered_in < LEASE + SWEEP + 5


def test_an_executor_that_kills_its_process_is_recorded(client, queue, dsn, ledger):
    crasher = fast_worker(dsn, "crasher", "--no-sweep")
    task_id = client.submit_task("crash", max_retries=0)
    assert crasher.wait(timeout=60) == 3
    sweeper = Sweeper(queue.db)
    poll(lambda: sweeper.run_once().failed, timeout=LEASE + 10)
    task = client.get_task(task_id)
    assert task["state"] == "failed"
    assert task["error"]["message"] == "lease expired: worker crasher stopped heartbeating"


def test_killed_connections_are_survived(client, dsn, ledger):
    victim_dsn = make_conninfo(dsn, application_name="fault-victim")
    worker = fast_worker(victim_dsn, "victim", "--concurrency", "4", ledger_dsn=dsn)
    ids = client.submit_batch([{"task_type": "nap"}] * 400)
    try:
        for done_before_kill in (50, 150, 250):
            poll(lambda done=done_before_kill: len(runs_per_task(ledger)) >= done, timeout=60)
            killed = ledger.execute("""
                SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                WHERE application_name = 'fault-victim'""").fetchone()[0]
            assert killed >= 2  # the worker's pool and its LISTEN connection
        tasks = client.wait_for_batch(ids, timeout=120)
    finally:
        assert stop(worker) == [0]
    assert {t["state"] for t in tasks} == {"succeeded"}
    assert sorted(runs_per_task(ledger)) == sorted(ids)


def test_a_worker_rides_out_its_schema_gone_for_a_while(client, dsn, ledger):
    """A schema gone under a running worker (a restore, a downgrade run too far) is
    waited out as an outage is, not the end of the worker."""
    victim_dsn = make_conninfo(dsn, application_name="schema-victim")
    worker = fast_worker(victim_dsn, "schema-victim", ledger_dsn=dsn)
    try:
        client.wait_for_task(client.submit_task("nap"), timeout=60)
        ledger.execute("ALTER SCHEMA omnispindle RENAME TO omnispindle_away")
        ledger.execute("""
            SELECT pg_terminate_backend(pid) FROM pg_stat_activity
            WHERE application_name = 'schema-victim'""")
        # A step tried on a new connection, which finds no schema.
        poll(
            lambda: ledger.execute("""
                SELECT count(*) FROM pg_stat_activity
                WHERE application_name = 'schema-victim'
                  AND query LIKE '%complete_and_claim%'""").fetchone()[0],
            timeout=30,
        )
        ledger.execute("ALTER SCHEMA omnispindle_away RENAME TO omnispindle")
        task = client.wait_for_task(client.submit_task("nap"), timeout=60)
        assert task["state"] == "succeeded"
        assert worker.poll() is None
    finally:
        stop(worker)


@pytest.fixture
def own_server():
    """An embedded server of this test's own, which it may restart."""
    with servers.own_server() as server:
        yield server


def test_a_database_restart_is_survived(own_server):
    dsn = own_server.dsn
    queue = TaskQueue(dsn=dsn, migrate=True)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE test_ledger (task_id bigint NOT NULL, pid integer NOT NULL)")
    ids = TaskQueueClient(local_queue=queue).submit_batch([{"task_type": "nap"}] * 300)
    queue.shutdown()
    worker = fast_worker(dsn, "survivor", "--concurrency", "4")
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            poll(lambda: len(runs_per_task(conn)) >= 50, timeout=60)
        own_server.restart()
        queue = TaskQueue(dsn=dsn, migrate=False)
        tasks = TaskQueueClient(local_queue=queue).wait_for_batch(ids, timeout=120)
        with psycopg.connect(dsn, autocommit=True) as conn:
            assert sorted(runs_per_task(conn)) == sorted(ids)
        queue.shutdown()
    finally:
        codes = stop(worker)
    assert codes == [0]
    assert {t["state"] for t in tasks} == {"succeeded"}
    log_lines = worker.stderr.read().splitlines()
    assert len(log_lines) < 20, "the outage flooded the log:\n" + "\n".join(log_lines)


def test_sweep_command_runs_one_pass(client, conn, dsn):
    import json
    import subprocess
    import sys

    from .workers import ROOT, worker_env

    task_id = client.submit_task("job")
    conn.execute(
        """
        UPDATE omnispindle.tasks
        SET state = 'running', attempts = 1, worker_id = gen_random_uuid(), started_at = now(),
            lease_token = gen_random_uuid(), lease_expires_at = now() - interval '1 second'
        WHERE id = %s""",
        [task_id],
    )
    command = [sys.executable, "-m", "omnispindle", "sweep", "--dsn", dsn, "--once"]
    done = subprocess.run(
        command, env=worker_env(dsn), cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "requeued": 1,
        "failed": 0,
        "dead_workers": 0,
        "reconciled": 0,
        "pruned": 0,
        "archived": 0,
        "dropped": 0,
    }
    assert client.get_task(task_id)["state"] == "pending"
