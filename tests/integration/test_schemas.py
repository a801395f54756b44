"""Isolation: each schema of a database is a queue of its own, whose workers,
sweeper, pruner, locks and notifications see no other's (issue 18, finding 10)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator

import psycopg
import psycopg.sql
import pytest
from psycopg.conninfo import make_conninfo

from omnispindle import (
    AsyncTaskQueueClient,
    ConfigurationError,
    LockTimeoutError,
    TaskQueue,
    TaskQueueClient,
    ValidationError,
    WorkerClient,
    current_task,
    entry,
)
from omnispindle._db.namespace import Namespace
from omnispindle._db.schema_state import head_revision, recorded_revision
from omnispindle._maintenance.sweeper import Sweeper, SweeperConfig
from omnispindle.migrate import downgrade, grant, upgrade

from ..acceptance.workers import ROOT, poll

DEADLINE = 60
OTHER = "billing"
CRASHED_CLAIM = (
    "UPDATE {}.tasks SET state = 'running', attempts = 1, started_at = now(), "
    "worker_id = gen_random_uuid(), lease_token = gen_random_uuid(), "
    "lease_expires_at = now() - interval '1 minute' WHERE id = %s"
)
LOST_WORKER = (
    "INSERT INTO {}.workers (name, host, pid, concurrency, version, last_heartbeat_at) "
    "VALUES ('lost', 'elsewhere', 1, 1, 'test', now() - interval '1 day')"
)


@pytest.fixture
def billing(dsn) -> Iterator[TaskQueue]:
    """The queue in schema ``billing`` of the test's database, beside ``omnispindle``."""
    upgrade(dsn, schema=OTHER)
    queue = TaskQueue(dsn, schema=OTHER)
    yield queue
    queue.shutdown()


def named(statement: str, name: str) -> psycopg.sql.Composed:
    """``statement`` with its ``{}`` filled by the identifier ``name``."""
    return psycopg.sql.SQL(statement).format(psycopg.sql.Identifier(name))


def run_worker(
    queue: TaskQueue, executors: dict, **settings
) -> tuple[WorkerClient, threading.Thread]:
    worker = WorkerClient(local_queue=queue, poll_interval=0.2, **settings)
    for task_type, fn in executors.items():
        worker.register_task_executor(task_type, fn)
    thread = threading.Thread(target=worker.start, daemon=True)
    thread.start()
    return worker, thread


def stop(worker: WorkerClient, thread: threading.Thread) -> None:
    worker.stop(timeout=DEADLINE)
    thread.join(DEADLINE)


def test_a_worker_never_claims_another_schemas_task(client, billing, start_worker):
    """App A's worker claimed app B's task and received its parameters."""
    seen: list[dict] = []
    start_worker({"t": lambda task: seen.append(task["parameters"]) or {"ok": True}})
    theirs = TaskQueueClient(local_queue=billing).submit_task("t", {"api_key": "B-SECRET"})
    ours = client.submit_task("t", {"api_key": "A"})
    assert client.wait_for_task(ours, timeout=DEADLINE)["state"] == "succeeded"
    # A second task of ours runs after theirs was submitted: a claim that
    # could see theirs would have taken it first (same priority, older).
    later = client.submit_task("t", {"api_key": "A2"})
    assert client.wait_for_task(later, timeout=DEADLINE)["state"] == "succeeded"
    assert seen == [{"api_key": "A"}, {"api_key": "A2"}]
    billing_client = TaskQueueClient(local_queue=billing, poll_interval=0.2)
    assert billing_client.get_task(theirs)["state"] == "pending"
    # Their own worker runs it.
    worker, thread = run_worker(billing, {"t": lambda task: {"key": task["parameters"]["api_key"]}})
    try:
        assert billing_client.wait_for_task(theirs, timeout=DEADLINE)["result"] == {
            "key": "B-SECRET"
        }
    finally:
        stop(worker, thread)
    assert seen == [{"api_key": "A"}, {"api_key": "A2"}]


def test_notifications_stay_in_their_schema(dsn, client, billing, start_worker):
    start_worker({"t": lambda task: {"ok": True}})
    with psycopg.connect(dsn, autocommit=True) as listener:
        for channel in ("omnispindle_finished", "billing_ready", "billing_finished"):
            listener.execute(psycopg.sql.SQL("LISTEN {}").format(psycopg.sql.Identifier(channel)))
        client.wait_for_task(client.submit_task("t"), timeout=DEADLINE)
        # Ours notifies its own channel, and nothing reaches billing's before it.
        heard = [n.channel for n in listener.notifies(timeout=DEADLINE, stop_after=1)]
        assert heard == ["omnispindle_finished"]
        TaskQueueClient(local_queue=billing).submit_task("t")
        heard = [n.channel for n in listener.notifies(timeout=DEADLINE, stop_after=1)]
        assert heard == ["billing_ready"]


def test_a_sweeper_and_a_pruner_touch_only_their_schema(queue, billing, conn):
    """Any app's sweeper pruned every app's tasks and declared every app's workers dead."""
    theirs = TaskQueueClient(local_queue=billing)
    crashed = theirs.submit_task("t")
    conn.execute(named(CRASHED_CLAIM, OTHER), [crashed])
    conn.execute(named(LOST_WORKER, OTHER))
    finished = theirs.submit_task("t")
    theirs.cancel_task(finished)

    ours = Sweeper(queue.db, SweeperConfig(retention=0.001)).run_once()
    assert (ours.requeued, ours.dead_workers, ours.pruned) == (0, 0, 0)
    assert queue.prune(older_than=0.001) == 0
    assert theirs.get_task(crashed)["state"] == "running"
    assert theirs.get_task(finished)["state"] == "cancelled"

    own = Sweeper(billing.db, SweeperConfig(retention=0.001)).run_once()
    assert (own.requeued, own.dead_workers, own.pruned) == (1, 1, 1)
    assert theirs.get_task(crashed)["state"] == "pending"


def streaming(task):
    for n in range(3):
        current_task().emit({"n": n})
    return {"streamed": 3}


def test_the_core_paths_run_in_a_schema_of_their_own(billing, client):
    producer = TaskQueueClient(local_queue=billing, poll_interval=0.2)

    def flaky(task):
        if task["attempt"] == 1:
            raise RuntimeError("first attempt fails")
        return {"attempt": task["attempt"]}

    worker, thread = run_worker(
        billing,
        {
            "double": lambda task: {"n": task["parameters"]["n"] * 2},
            "sum": lambda task: {"n": sum(r["n"] for r in task["dependency_results"].values())},
            "flaky": flaky,
            "stream": streaming,
            "tick": lambda task: {"ticked": True},
        },
        sweep_interval=0.2,
        schedule_interval=0.2,
    )
    try:
        first = producer.submit_task("double", {"n": 2}, idempotency_key="k-1")
        assert producer.submit_task("double", {"n": 2}, idempotency_key="k-1") == first
        ids = producer.submit_batch(
            [
                {"task_type": "double", "parameters": {"n": 1}},
                {"task_type": "double", "parameters": {"n": 3}},
                {"task_type": "sum", "dependencies": [entry(0), entry(1), first]},
            ]
        )
        assert producer.wait_for_task(ids[2], timeout=DEADLINE)["result"] == {"n": 12}
        flaky_id = producer.submit_task("flaky", retry_backoff=0.01)
        assert producer.wait_for_task(flaky_id, timeout=DEADLINE)["result"] == {"attempt": 2}
        later = producer.submit_task("double", {"n": 1}, delay=3600)
        assert producer.cancel_task(later)
        streamed = producer.submit_task("stream")
        events = list(producer.stream_task(streamed, timeout=DEADLINE))
        assert [e["data"] for e in events if e["kind"] == "partial"] == [
            {"n": 0},
            {"n": 1},
            {"n": 2},
        ]
        producer.add_periodic_task("every-second", "* * * * * *", "tick")
        poll(lambda: any(s["last_task_id"] for s in producer.list_periodic_tasks()), DEADLINE)
        producer.remove_periodic_task("every-second")
    finally:
        stop(worker, thread)
    assert billing.get_metrics()["totals"]["succeeded"] >= 6
    # The default schema's queue saw none of it.
    assert client.queue.get_metrics()["totals"].get("succeeded", 0) == 0
    assert client.list_periodic_tasks() == []
    assert billing.prune(older_than=0.001) >= 6


@pytest.mark.parametrize(
    "name",
    [
        'quote"d',
        "it's",
        "with space",
        "dollar$$body",
        "Billing",
        "9lives",
        "pg_queue",
        "public",
        "x" * 55,
        "é" * 28,  # 56 bytes
        "",
    ],
)
def test_a_schema_name_a_queue_cannot_use_is_refused_before_anything_changes(dsn, conn, name):
    schemas = conn.execute("SELECT count(*) FROM pg_namespace").fetchone()
    with pytest.raises(ValidationError, match="schema"):
        TaskQueue(dsn, schema=name, migrate=True)
    with pytest.raises(ValidationError, match="schema"):
        upgrade(dsn, schema=name)
    done = command("migrate", "--dsn", dsn, "--schema", name)
    assert done.returncode != 0 and "schema" in done.stderr
    assert "Traceback" not in done.stderr
    assert conn.execute("SELECT count(*) FROM pg_namespace").fetchone() == schemas


@pytest.mark.parametrize("name", ["facturación", "select", "q" * 54, "_x1"])
def test_any_schema_name_a_queue_accepts_works_end_to_end(dsn, name):
    queue = TaskQueue(dsn, schema=name, migrate=True)
    try:
        client = TaskQueueClient(local_queue=queue, poll_interval=0.2)
        worker, thread = run_worker(queue, {"t": lambda task: {"ok": True}})
        try:
            task_id = client.submit_task("t")
            assert client.wait_for_task(task_id, timeout=DEADLINE)["state"] == "succeeded"
        finally:
            stop(worker, thread)
    finally:
        queue.shutdown()


def command(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "omnispindle", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        env=env,
    )


def test_the_commands_take_the_schema(dsn, client):
    assert command("migrate", "--dsn", dsn, "--schema", OTHER).returncode == 0
    submitted = command("submit", "t", "--dsn", dsn, "--schema", OTHER)
    assert submitted.returncode == 0, submitted.stderr
    ours = client.submit_task("ours")
    listed = command("tasks", "--dsn", dsn, "--schema", OTHER)
    assert listed.returncode == 0, listed.stderr
    assert " t " in listed.stdout and "ours" not in listed.stdout
    assert "ours" in command("tasks", "--dsn", dsn).stdout
    missing = command("status", "--dsn", dsn, "--schema", "shipping")
    assert missing.returncode != 0
    assert "--schema shipping" in missing.stderr
    assert client.get_task(ours)["state"] == "pending"


def test_an_observer_of_one_schema_reads_no_other(dsn, conn, billing):
    role = f"billing_observer_{uuid.uuid4().hex[:8]}"
    conn.execute(psycopg.sql.SQL("CREATE ROLE {} LOGIN").format(psycopg.sql.Identifier(role)))
    try:
        grant(dsn, role, "observer", schema=OTHER)
        TaskQueueClient(local_queue=billing).submit_task("t")
        observer = TaskQueue(make_conninfo(dsn, user=role), schema=OTHER)
        try:
            assert observer.get_metrics()["totals"]["pending"] == 1
        finally:
            observer.shutdown()
        with (
            psycopg.connect(make_conninfo(dsn, user=role)) as outsider,
            pytest.raises(psycopg.errors.InsufficientPrivilege),
        ):
            outsider.execute("SELECT * FROM omnispindle.task_details")
    finally:
        for statement in ("DROP OWNED BY {}", "DROP ROLE {}"):
            conn.execute(named(statement, role))


def test_migration_locks_are_per_schema_and_out_of_an_outsiders_reach(
    empty_dsn, server_dsn, monkeypatch
):
    """Any role that could connect could hang every migrating command (finding 3)."""
    from omnispindle._core import defaults

    monkeypatch.setattr(defaults, "LOCK_TIMEOUT", 1.0)
    role = f"migration_outsider_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        admin.execute(named("CREATE ROLE {} LOGIN", role))
    try:
        upgrade(empty_dsn, revision="0006_sql_entry_points")
        with psycopg.connect(make_conninfo(empty_dsn, user=role), autocommit=True) as outsider:
            outsider.execute("SELECT pg_advisory_lock(hashtext('omnispindle.migrate'))")
            # An installed schema is locked through its version table, which
            # the outsider may not lock; another schema's first install has a
            # key of its own.
            with pytest.raises(psycopg.errors.InsufficientPrivilege), outsider.transaction():
                outsider.execute("LOCK TABLE omnispindle.alembic_version")
            started = time.monotonic()
            upgrade(empty_dsn)
            upgrade(empty_dsn, schema=OTHER)
            assert time.monotonic() - started < 20
        # Two migrators of one schema still queue: the second waits, bounded.
        with psycopg.connect(empty_dsn) as migrator:
            migrator.execute("LOCK TABLE omnispindle.alembic_version IN SHARE ROW EXCLUSIVE MODE")
            with pytest.raises(LockTimeoutError):
                upgrade(empty_dsn)
    finally:
        with psycopg.connect(server_dsn, autocommit=True) as admin:
            admin.execute(named("DROP ROLE {}", role))


def test_a_schema_comes_with_the_queue_it_names(queue):
    """A client given a TaskQueue takes that queue's schema; another one is refused."""
    for client in (TaskQueueClient, AsyncTaskQueueClient):
        with pytest.raises(ConfigurationError, match=r"TaskQueue\(\.\.\., schema=\.\.\.\)"):
            client(local_queue=queue, schema=OTHER)
    with pytest.raises(ConfigurationError, match="schema"):
        WorkerClient(local_queue=queue, schema=OTHER)


def test_a_schemas_history_is_its_own(queue, billing, conn):
    theirs = TaskQueueClient(local_queue=billing)
    finished = theirs.submit_task("t")
    theirs.cancel_task(finished)
    conn.execute(
        named("UPDATE {}.tasks SET finished_at = now() - interval '1 hour' WHERE id = %s", OTHER),
        [finished],
    )
    sweeper = Sweeper(billing.db, SweeperConfig(archive_after=1.0))
    assert sweeper.run_once().archived == 1
    own = conn.execute(named("SELECT count(*) FROM {}.task_history", OTHER)).fetchone()[0]
    assert own == 1
    assert conn.execute("SELECT count(*) FROM omnispindle.history_partitions").fetchone()[0] == 0
    parts = conn.execute(
        "SELECT count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = %s::regclass AND c.relnamespace = %s::regnamespace",
        [f"{OTHER}.task_history", OTHER],
    ).fetchone()[0]
    assert parts > 0
    assert theirs.get_task(finished)["state"] == "cancelled"


def test_an_unknown_revision_is_refused_in_one_line_and_changes_nothing(dsn, conn, billing):
    schemas = conn.execute("SELECT count(*) FROM pg_namespace").fetchone()
    with pytest.raises(ValidationError, match="nope"):
        upgrade(dsn, "nope", schema="shipping")
    with pytest.raises(ValidationError, match="0012_chain_steps.down"):
        downgrade(dsn, "0012_chain_steps.down", schema=OTHER)
    done = command("migrate", "--dsn", dsn, "--schema", "shipping", "--revision", "nope")
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [done.stderr.strip()], done.stderr
    assert conn.execute("SELECT count(*) FROM pg_namespace").fetchone() == schemas
    assert recorded_revision(dsn, Namespace(OTHER)) == head_revision()


def test_migrate_says_the_revision_its_schema_is_at(dsn, billing):
    """Asked for a revision the schema is past, it stays where it is and says so."""
    done = command("migrate", "--dsn", dsn, "--schema", OTHER, "--revision", "0011_history")
    assert done.returncode == 0, done.stderr
    assert recorded_revision(dsn, Namespace(OTHER)) == head_revision()
    assert done.stdout.strip() == "omnispindle: schema at head"
