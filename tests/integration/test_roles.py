"""Least privilege: each role does its job with the rights omnispindle.grant_access
gives it, and is refused what it must not do (issue 18, finding 9)."""

from __future__ import annotations

import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator

import psycopg
import psycopg.sql
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from omnispindle import (
    PermissionDeniedError,
    TaskQueue,
    TaskQueueClient,
    ValidationError,
    WorkerClient,
    current_task,
    entry,
)
from omnispindle._db import queries as q
from omnispindle._maintenance import election
from omnispindle._maintenance.election import DutyLease
from omnispindle._maintenance.sweeper import Sweeper, SweeperConfig
from omnispindle.migrate import grant, upgrade

from ..acceptance.workers import ROOT, poll

DEADLINE = 60
ACCESS = ("observer", "producer", "worker")


@pytest.fixture
def role_dsns(dsn, conn) -> Iterator[dict[str, str]]:
    """A login role per kind of access, granted by omnispindle.grant_access; their DSNs."""
    suffix = uuid.uuid4().hex[:8]
    names = {access: f"os_{access}_{suffix}" for access in (*ACCESS, "outsider")}
    for access, name in names.items():
        conn.execute(psycopg.sql.SQL("CREATE ROLE {} LOGIN").format(psycopg.sql.Identifier(name)))
        if access != "outsider":
            conn.execute("SELECT omnispindle.grant_access(%s::regrole, %s)", [name, access])
    yield {access: make_conninfo(dsn, user=name) for access, name in names.items()}
    for name in names.values():
        role = psycopg.sql.Identifier(name)
        conn.execute(psycopg.sql.SQL("DROP OWNED BY {}").format(role))
        conn.execute(psycopg.sql.SQL("DROP ROLE {}").format(role))


@pytest.fixture
def as_role(role_dsns) -> Iterator:
    """``as_role(access)``: a TaskQueue on that role's connections."""
    queues: list[TaskQueue] = []

    def open_queue(access: str) -> TaskQueue:
        queue = TaskQueue(dsn=role_dsns[access])
        queues.append(queue)
        return queue

    yield open_queue
    for queue in queues:
        queue.shutdown()


def start(worker: WorkerClient) -> threading.Thread:
    thread = threading.Thread(target=worker.start, daemon=True)
    thread.start()
    return thread


def streaming(task):
    for n in range(3):
        current_task().emit({"n": n})
    return {"streamed": 3}


def test_the_core_paths_run_under_the_producer_and_worker_roles(as_role, conn):
    producer = TaskQueueClient(local_queue=as_role("producer"), poll_interval=0.2)
    worker_queue = as_role("worker")
    worker = WorkerClient(local_queue=worker_queue, poll_interval=0.2, sweep_interval=0.2)
    attempts: dict[int, int] = {}

    def flaky(task):
        attempts[task["task_id"]] = task["attempt"]
        if task["attempt"] == 1:
            raise RuntimeError("first attempt fails")
        return {"attempt": task["attempt"]}

    worker.register_task_executor("double", lambda task: {"n": task["parameters"]["n"] * 2})
    worker.register_task_executor(
        "sum", lambda task: {"n": sum(r["n"] for r in task["dependency_results"].values())}
    )
    worker.register_task_executor("flaky", flaky)
    worker.register_task_executor("fails", lambda task: 1 / 0)
    worker.register_task_executor("stream", streaming)
    worker.register_task_executor("tick", lambda task: {"ticked": True})
    thread = start(worker)
    try:
        # submit, claim, complete; a DAG with results passed on; idempotency
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
        # a batch linked only within itself
        linked = producer.submit_batch(
            [
                {"task_type": "double", "parameters": {"n": 4}},
                {"task_type": "sum", "dependencies": [entry(0)]},
            ]
        )
        assert producer.wait_for_task(linked[1], timeout=DEADLINE)["result"] == {"n": 8}
        # retry by backoff, then by hand with dependents
        flaky_id = producer.submit_task("flaky", retry_backoff=0.01)
        assert producer.wait_for_task(flaky_id, timeout=DEADLINE)["result"] == {"attempt": 2}
        failing = producer.submit_task("fails", max_retries=0)
        child = producer.submit_task("double", {"n": 5}, dependencies=[failing])
        assert producer.wait_for_task(failing, timeout=DEADLINE)["state"] == "failed"
        assert producer.wait_for_task(child, timeout=DEADLINE)["state"] == "cancelled"
        producer.retry_task(failing, with_dependents=True)
        assert producer.wait_for_task(failing, timeout=DEADLINE)["state"] == "failed"
        # cancel
        later = producer.submit_task("double", {"n": 1}, delay=3600)
        assert producer.cancel_task(later)
        assert producer.get_task(later)["state"] == "cancelled"
        # stream
        streamed = producer.submit_task("stream")
        events = list(producer.stream_task(streamed, timeout=DEADLINE))
        assert [e["data"] for e in events if e["kind"] == "partial"] == [
            {"n": 0},
            {"n": 1},
            {"n": 2},
        ]
        # schedules: the producer saves one, the worker's scheduler enqueues it
        producer.add_periodic_task("every-second", "* * * * * *", "tick")
        poll(
            lambda: any(s["last_task_id"] for s in producer.list_periodic_tasks()),
            DEADLINE,
        )
        producer.remove_periodic_task("every-second")
        # metrics, from the producer's side
        assert producer.queue.get_metrics()["totals"]["succeeded"] >= 5
    finally:
        worker.stop(timeout=DEADLINE)
        thread.join(DEADLINE)
    # sweeping and pruning, under the worker role
    assert worker_queue.prune(older_than=0.001) > 0
    Sweeper(worker_queue.db, SweeperConfig()).run_once()


def test_the_sweeper_requeues_a_dead_workers_task_under_the_worker_role(as_role, conn):
    producer = TaskQueueClient(local_queue=as_role("producer"))
    task_id = producer.submit_task("t")
    conn.execute(
        "UPDATE omnispindle.tasks SET state = 'running', attempts = 1, started_at = now(), "
        "lease_token = gen_random_uuid(), lease_expires_at = now() - interval '1 minute' "
        "WHERE id = %s",
        [task_id],
    )
    counts = Sweeper(as_role("worker").db, SweeperConfig()).run_once()
    assert counts.requeued == 1
    assert producer.get_task(task_id)["state"] == "pending"


def test_a_worker_role_granted_before_the_rollup_sweeps_on_and_warns_once(
    role_dsns, as_role, conn, caplog
):
    """A role granted before 0008 may not fill the rollup: its sweeper must go on
    sweeping, say so once, and stop trying."""
    worker = psycopg.sql.Identifier(conninfo_to_dict(role_dsns["worker"])["user"])
    conn.execute(
        psycopg.sql.SQL(
            "REVOKE UPDATE ON omnispindle.outcome_rollup FROM {role}; "
            "REVOKE INSERT, UPDATE, DELETE ON omnispindle.outcome_minutes FROM {role}"
        ).format(role=worker)
    )
    sweeper = Sweeper(as_role("worker").db, SweeperConfig())
    with caplog.at_level("WARNING", logger="omnispindle.sweeper"):
        assert [sweeper.run_once().counted for _ in range(2)] == [0, 0]
    warnings = [r for r in caplog.records if "outcome rollup" in r.getMessage()]
    assert len(warnings) == 1


def test_a_worker_role_granted_before_the_leases_sweeps_each_and_warns_once(
    role_dsns, as_role, conn, caplog
):
    """A role granted before the maintenance leases may not take one: each of its
    processes must go on sweeping, as all did before, and say so once."""
    worker = psycopg.sql.Identifier(conninfo_to_dict(role_dsns["worker"])["user"])
    conn.execute(
        psycopg.sql.SQL(
            "REVOKE INSERT, UPDATE, DELETE ON omnispindle.maintenance_leases FROM {role}"
        ).format(role=worker)
    )
    lease = DutyLease(as_role("worker").db, election.SWEEP, 60)
    with caplog.at_level("WARNING", logger="omnispindle.maintenance"):
        assert [lease.hold(), lease.hold()] == [True, True]
    warnings = [r for r in caplog.records if "take turns" in r.getMessage()]
    assert len(warnings) == 1
    lease.give_up()  # holds nothing in the table: nothing to give up


def test_a_worker_role_refused_a_sweep_runs_its_tasks_and_leaves_the_sweep_to_others(
    role_dsns, as_role, conn, caplog
):
    """A role refused one of the sweeper's statements (a right revoked, or granted
    by hand without it): the worker's thread ended with PermissionDeniedError at
    its first sweep, and no task ever ran."""
    worker_role = psycopg.sql.Identifier(conninfo_to_dict(role_dsns["worker"])["user"])
    conn.execute(
        psycopg.sql.SQL("REVOKE DELETE ON omnispindle.submissions FROM {role}").format(
            role=worker_role
        )
    )
    worker = WorkerClient(local_queue=as_role("worker"), sweep_interval=0.1, poll_interval=0.2)
    worker.register_task_executor("t", lambda task: {"ok": True})
    producer = TaskQueueClient(local_queue=as_role("producer"))
    with caplog.at_level("WARNING", logger="omnispindle.maintenance"):
        thread = start(worker)
        try:
            task_id = producer.submit_task("t")
            assert producer.wait_for_task(task_id, timeout=30)["state"] == "succeeded"
            refused = poll(
                lambda: [r for r in caplog.records if "may not sweep" in r.getMessage()],
                timeout=DEADLINE,
            )
            # Handed on at once, for a process whose role may sweep.
            assert conn.execute(
                "SELECT count(*) FROM omnispindle.maintenance_leases WHERE duty = 'sweep'"
            ).fetchone() == (0,)
        finally:
            worker.stop(timeout=DEADLINE)
            thread.join(DEADLINE)
    assert "permission denied for table submissions" in refused[0].getMessage()
    assert len(refused) == 1


def test_a_worker_role_takes_and_gives_up_the_maintenance_leases(as_role, conn):
    lease = DutyLease(as_role("worker").db, election.SCHEDULE, 60)
    assert lease.hold()
    assert conn.execute("SELECT count(*) FROM omnispindle.maintenance_leases").fetchone() == (1,)
    lease.give_up()
    assert conn.execute("SELECT count(*) FROM omnispindle.maintenance_leases").fetchone() == (0,)


def command(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "omnispindle", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=DEADLINE,
    )


def test_read_only_commands_need_only_the_views(role_dsns, client):
    """A role with SELECT on the views alone could not run tasks or metrics."""
    task_id = client.submit_task("t", {"n": 1})
    observer = role_dsns["observer"]
    for args in (
        ["status"],
        ["tasks"],
        ["tasks", str(task_id)],
        ["metrics", "--once"],
    ):
        done = command(*args, "--dsn", observer)
        assert done.returncode == 0, (args, done.stderr)
    assert f"{task_id}" in command("tasks", "--dsn", observer).stdout
    client.pause_task_type("t", reason="quota")
    client.set_task_type_limit("t", max_running=4)
    shown = command("status", "--dsn", observer).stdout
    assert "quota" in shown and "Task type limits" in shown
    queue = TaskQueue(dsn=observer)
    try:
        assert queue.get_metrics()["totals"]["pending"] == 1
        with pytest.raises(PermissionDeniedError):
            TaskQueueClient(local_queue=queue).submit_task("t")
    finally:
        queue.shutdown()


def test_the_worker_and_sweep_commands_run_under_the_worker_role(role_dsns, client, tmp_path):
    """Without CREATE on the database, the worker command failed even on a current schema."""
    (tmp_path / "mytasks.py").write_text(
        "def register(worker):\n    worker.register_task_executor('t', lambda task: {'ok': 1})\n"
    )
    assert command("sweep", "--once", "--dsn", role_dsns["worker"]).returncode == 0
    task_id = client.submit_task("t")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "omnispindle",
            "worker",
            "--dsn",
            role_dsns["worker"],
            "--executors",
            "mytasks",
        ],
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert client.wait_for_task(task_id, timeout=DEADLINE)["result"] == {"ok": 1}
    finally:
        process.terminate()
        _, err = process.communicate(timeout=DEADLINE)
    assert process.returncode == 0, err


REFUSED = {
    "observer": [
        "SELECT * FROM omnispindle.tasks",
        "INSERT INTO omnispindle.tasks (task_type) VALUES ('t')",
        "SELECT omnispindle.cancel_task(1, 'no')",
        "SELECT omnispindle.pause_task_type('t')",
    ],
    "producer": [
        'UPDATE omnispindle.tasks SET parameters = \'{"api_key": "x"}\'',
        "UPDATE omnispindle.tasks SET state = 'cancelled'",
        "DELETE FROM omnispindle.tasks",
        "INSERT INTO omnispindle.tasks (task_type, result) VALUES ('t', '{}')",
        "SELECT * FROM omnispindle.claim_tasks('{t}', '{t}', 1, gen_random_uuid(), 30)",
        "CREATE TABLE omnispindle.mine (x int)",
        "INSERT INTO omnispindle.paused_task_types (task_type) VALUES ('t')",
    ],
    "worker": [
        'UPDATE omnispindle.tasks SET parameters = \'{"api_key": "x"}\'',
        "UPDATE omnispindle.tasks SET task_type = 'other', priority = 1000",
        "CREATE TABLE omnispindle.mine (x int)",
        "DROP TABLE omnispindle.task_stream",
        "ALTER TABLE omnispindle.tasks DISABLE TRIGGER USER",
        "SELECT * FROM other_app.secrets",
        "SELECT omnispindle.pause_task_type('t')",
        "DELETE FROM omnispindle.paused_task_types",
    ],
    "outsider": [
        "SELECT * FROM omnispindle.paused_task_types",
        "SELECT * FROM omnispindle.queue_summary",
        "SELECT omnispindle.enqueue('t')",
        "SELECT * FROM other_app.secrets",
    ],
}


@pytest.mark.parametrize(
    ("access", "statement"), [(a, s) for a, statements in REFUSED.items() for s in statements]
)
def test_each_role_is_refused_what_it_must_not_do(role_dsns, client, conn, access, statement):
    client.submit_task("t", {"api_key": "B-SECRET"})
    conn.execute("CREATE SCHEMA IF NOT EXISTS other_app")
    conn.execute("CREATE TABLE IF NOT EXISTS other_app.secrets (value text)")
    with (
        psycopg.connect(role_dsns[access], autocommit=True) as session,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        session.execute(statement)
    assert client.get_task(1)["parameters"] == {"api_key": "B-SECRET"}


def test_only_known_access_is_granted(conn):
    with pytest.raises(psycopg.Error, match="give observer, producer or worker"):
        conn.execute("SELECT omnispindle.grant_access('postgres', 'admin')")


@pytest.mark.parametrize(
    "statement",
    [
        "SELECT omnispindle.grant_access(NULL, 'observer')",
        "SELECT omnispindle.grant_access(0::oid::regrole, 'observer')",
        "SELECT omnispindle.grant_access(4000000000::oid::regrole, 'observer')",
    ],
)
def test_only_an_existing_role_is_granted(conn, statement):
    # It was a syntax error: the GRANTs went to nothing, or to "-".
    with pytest.raises(psycopg.errors.UndefinedObject, match="give an existing role"):
        conn.execute(statement)


def test_granting_to_no_role_is_a_validation_error(dsn):
    with pytest.raises(ValidationError, match="give an existing role"):
        grant(dsn, None, "observer")  # type: ignore[arg-type]


def test_the_grant_command_gives_a_role_its_access(dsn, conn):
    role = f"os_granted_{uuid.uuid4().hex[:8]}"
    identifier = psycopg.sql.Identifier(role)
    conn.execute(psycopg.sql.SQL("CREATE ROLE {} LOGIN").format(identifier))
    try:
        refused = command("status", "--dsn", make_conninfo(dsn, user=role))
        assert refused.returncode == 1
        done = command("grant", "observer", role, "--dsn", dsn)
        assert done.returncode == 0, done.stderr
        assert done.stdout == f"omnispindle: granted observer access to {role}\n"
        assert command("status", "--dsn", make_conninfo(dsn, user=role)).returncode == 0
        assert command("grant", "admin", role, "--dsn", dsn).returncode == 2
    finally:
        conn.execute(psycopg.sql.SQL("DROP OWNED BY {}").format(identifier))
        conn.execute(psycopg.sql.SQL("DROP ROLE {}").format(identifier))


def test_the_grant_command_takes_a_role_by_its_name(dsn, conn):
    """The role is named as createuser names it: the command read the name as SQL,
    so a role with capitals was taken for its lowercase namesake (or refused as
    missing), and a cloud IAM user's name with dots failed with "invalid name
    syntax"."""
    suffix = uuid.uuid4().hex[:8]
    capitals, namesake = f"os_Reports_{suffix}", f"os_reports_{suffix}"
    dotted = f"os-sa-{suffix}@project.iam"
    try:
        for name in (capitals, namesake, dotted):
            conn.execute(
                psycopg.sql.SQL("CREATE ROLE {} LOGIN").format(psycopg.sql.Identifier(name))
            )
        for name in (capitals, dotted):
            done = command("grant", "observer", name, "--dsn", dsn)
            assert done.returncode == 0, done.stderr
            assert done.stdout == f"omnispindle: granted observer access to {name}\n"
            shown = command("status", "--dsn", make_conninfo(dsn, user=name))
            assert shown.returncode == 0, shown.stderr
        held = conn.execute(
            "SELECT has_schema_privilege(%s, 'omnispindle', 'USAGE')", [namesake]
        ).fetchone()
        assert held == (False,)
        grant(dsn, capitals, "producer")
        queue = TaskQueue(dsn=make_conninfo(dsn, user=capitals))
        try:
            assert TaskQueueClient(local_queue=queue).submit_task("t") > 0
        finally:
            queue.shutdown()
        with pytest.raises(ValidationError, match="does not exist"):
            grant(dsn, f"os_nobody_{suffix}", "worker")
        missing = command("grant", "worker", f"os_nobody_{suffix}", "--dsn", dsn)
        assert (missing.returncode, missing.stdout) == (2, "")
        assert f"os_nobody_{suffix}" in missing.stderr
    finally:
        drop_roles(conn, [capitals, namesake, dotted])


def test_producer_commands_run_under_the_producer_role(role_dsns, as_role):
    producer = role_dsns["producer"]
    submitted = command("submit", "later", "--params", '{"n": 1}', "--dsn", producer)
    assert submitted.returncode == 0, submitted.stderr
    task_id = submitted.stdout.strip()
    for args in (
        ["cancel", task_id],
        ["schedules", "add", "nightly", "@daily", "report"],
        ["schedules", "list"],
        ["schedules", "remove", "nightly"],
        ["pause", "report", "--reason", "quota"],
        ["resume", "report"],
        ["limit", "report", "--max-running", "2"],
        ["limit", "report", "--clear"],
        ["strategy", "report", "aging", "--aging-seconds", "5"],
    ):
        done = command(*args, "--dsn", producer)
        assert done.returncode == 0, (args, done.stderr)


def test_a_producer_pauses_and_resumes_and_a_worker_claims_around_the_pause(as_role):
    producer = TaskQueueClient(local_queue=as_role("producer"), poll_interval=0.2)
    task_id = producer.submit_task("t")
    assert producer.pause_task_type("t", reason="quota") is True
    assert [p["reason"] for p in producer.paused_task_types()] == ["quota"]
    worker = WorkerClient(local_queue=as_role("worker"), poll_interval=0.2, sweep_interval=0.2)
    worker.register_task_executor("t", lambda task: {"ok": 1})
    thread = start(worker)
    try:
        assert producer.resume_task_type("t") is True
        assert producer.wait_for_task(task_id, timeout=DEADLINE)["result"] == {"ok": 1}
    finally:
        worker.stop(timeout=DEADLINE)
        thread.join(timeout=DEADLINE)


def test_a_worker_role_claims_a_task_that_needs_a_capability(as_role, conn):
    conn.execute(
        "INSERT INTO omnispindle.tasks (task_type, required_capabilities) VALUES ('t', '{gpu}')"
    )
    worker = as_role("worker")
    claimed = worker.db.run(
        q.tasks.claim_tasks(
            task_types=["t"], capabilities=["gpu", "cpu"], limit=5, worker_id=uuid.uuid4(),
            lease_seconds=30,
        )
    )  # fmt: skip
    assert len(claimed) == 1


def test_a_worker_role_clears_the_mark_of_a_task_due_later_come_due(as_role, conn):
    """The claim's clearing runs with the worker role's rights."""
    conn.execute(
        "INSERT INTO omnispindle.tasks (task_type, run_after) "
        "VALUES ('work', now() + interval '1 day')"
    )
    conn.execute("UPDATE omnispindle.tasks SET run_after = now()")
    worker = as_role("worker")
    claimed = worker.db.run(
        q.tasks.claim_tasks(
            task_types=["work"], capabilities=[], limit=5, worker_id=uuid.uuid4(),
            lease_seconds=30,
        )
    )  # fmt: skip
    assert len(claimed) == 1
    assert conn.execute("SELECT due_later FROM omnispindle.tasks").fetchone() == (False,)


def test_roles_granted_before_0009_keep_claiming_and_producers_may_pause(server_dsn, empty_dsn):
    """Every claim reads the paused types: a worker granted at 0008 could claim nothing."""
    upgrade(empty_dsn, "0008_dashboard")
    suffix = uuid.uuid4().hex[:8]
    names = {access: f"os_old_{access}_{suffix}" for access in ("producer", "worker")}
    with psycopg.connect(empty_dsn, autocommit=True) as admin:
        for access, name in names.items():
            admin.execute(
                psycopg.sql.SQL("CREATE ROLE {} LOGIN").format(psycopg.sql.Identifier(name))
            )
            admin.execute("SELECT omnispindle.grant_access(%s::regrole, %s)", [name, access])
        try:
            upgrade(empty_dsn)
            with psycopg.connect(make_conninfo(empty_dsn, user=names["producer"])) as producer:
                producer.execute("SELECT omnispindle.enqueue('t')")
                producer.execute("SELECT omnispindle.pause_task_type('other')")
            # A task that needs a capability: the claim asks whether a narrower
            # worker should have it, which a role granted back then may too.
            admin.execute(
                "INSERT INTO omnispindle.tasks (task_type, required_capabilities) "
                "VALUES ('t', '{gpu}')"
            )
            with psycopg.connect(make_conninfo(empty_dsn, user=names["worker"])) as worker:
                claimed = worker.execute(
                    "SELECT count(*) FROM omnispindle.claim_tasks("
                    "'{t,other}', '{gpu}', 5, gen_random_uuid(), 30)"
                ).fetchone()
            assert claimed == (2,)
        finally:
            for name in names.values():
                role = psycopg.sql.Identifier(name)
                admin.execute(psycopg.sql.SQL("DROP OWNED BY {}").format(role))
                admin.execute(psycopg.sql.SQL("DROP ROLE {}").format(role))


def test_a_producer_limits_a_type_and_workers_claim_within_it(as_role):
    producer = TaskQueueClient(local_queue=as_role("producer"))
    producer.set_task_type_limit("t", max_running=1, starts_per_second=100)
    ids = [producer.submit_task("t") for _ in range(3)]
    worker_queue = as_role("worker")
    claim = q.tasks.claim_tasks(
        task_types=["t"], capabilities=[], limit=5, worker_id=uuid.uuid4(), lease_seconds=30
    )
    assert [row["id"] for row in worker_queue.db.run(claim)] == ids[:1]
    producer.set_task_type_strategy("t", "aging", aging_seconds=1)
    for access in ("worker", "observer"):
        other = TaskQueueClient(local_queue=as_role(access))
        with pytest.raises(PermissionDeniedError):
            other.set_task_type_limit("t", max_running=9)
        with pytest.raises(PermissionDeniedError):
            other.set_task_type_strategy("t", "priority")
        assert [s["strategy"] for s in other.task_type_strategies()] == ["aging"]
    observer = TaskQueueClient(local_queue=as_role("observer"))
    [limit] = observer.task_type_limits()
    assert (limit["max_running"], limit["running"], limit["held_back"]) == (1, 1, 2)
    # An autoscaler's role reads the scaling hint without reading the tasks.
    assert observer.workers_needed(1) == 1
    assert [row["demand"] for row in observer.worker_demand()] == [1]


def test_a_producer_submits_groups_and_shares_a_type_between_them(as_role):
    producer = TaskQueueClient(local_queue=as_role("producer"))
    producer.set_task_type_strategy("g", "fair")
    first = producer.submit_task("g", group_key="x")  # the plain insert
    [second] = producer.submit_batch(  # submit_tasks, for its dependency
        [{"task_type": "g", "group_key": "y", "dependencies": [first]}]
    )
    producer.submit_task("g", group_key="x")
    claim = q.tasks.claim_tasks(
        task_types=["g"], capabilities=[], limit=5, worker_id=uuid.uuid4(), lease_seconds=30
    )
    assert len(as_role("worker").db.run(claim)) == 2  # both of group x; y waits for first
    assert producer.get_task(second)["state"] == "blocked"


def test_roles_granted_before_0010_keep_claiming_and_producers_may_limit(server_dsn, empty_dsn):
    """Every claim reads the limits: a worker granted at 0009 could claim nothing."""
    upgrade(empty_dsn, "0009_pause")
    suffix = uuid.uuid4().hex[:8]
    names = {access: f"os_old_{access}_{suffix}" for access in ("observer", "producer", "worker")}
    with psycopg.connect(empty_dsn, autocommit=True) as admin:
        for access, name in names.items():
            admin.execute(
                psycopg.sql.SQL("CREATE ROLE {} LOGIN").format(psycopg.sql.Identifier(name))
            )
            admin.execute("SELECT omnispindle.grant_access(%s::regrole, %s)", [name, access])
        try:
            upgrade(empty_dsn)
            with psycopg.connect(make_conninfo(empty_dsn, user=names["producer"])) as producer:
                producer.execute("SELECT omnispindle.enqueue('t')")
                producer.execute("SELECT omnispindle.enqueue('t')")
                producer.execute(
                    "SELECT omnispindle.set_task_type_limit('t', 5, starts_per_second => 1)"
                )
            with psycopg.connect(make_conninfo(empty_dsn, user=names["worker"])) as worker:
                claimed = worker.execute(
                    "SELECT count(*) FROM omnispindle.claim_tasks("
                    "'{t}', '{}', 5, gen_random_uuid(), 30)"
                ).fetchone()
            assert claimed == (1,)  # the bucket held one start
            with psycopg.connect(make_conninfo(empty_dsn, user=names["observer"])) as observer:
                seen = observer.execute(
                    "SELECT running, held_back FROM omnispindle.task_type_limit_summary"
                ).fetchone()
            assert seen == (1, 1)
            # Producers granted before 0010 submit with group keys, both ways.
            with psycopg.connect(make_conninfo(empty_dsn, user=names["producer"])) as producer:
                producer.execute(
                    "INSERT INTO omnispindle.tasks (task_type, group_key) VALUES ('t', 'a')"
                )
                producer.execute(
                    "SELECT omnispindle.submit_tasks('{t}', ARRAY['{}'::jsonb], '{0}', '{1}', "
                    "'{1}', '{NULL}', ARRAY['[]'::jsonb], ARRAY['[]'::jsonb], ARRAY['[]'::jsonb], "
                    "'{f}', NULL, NULL, NULL, '{b}')"
                )
                groups = producer.execute(
                    "SELECT array_agg(group_key ORDER BY id) FROM omnispindle.tasks "
                    "WHERE group_key IS NOT NULL"
                ).fetchone()
            assert groups == (["a", "b"],)
        finally:
            for name in names.values():
                role = psycopg.sql.Identifier(name)
                admin.execute(psycopg.sql.SQL("DROP OWNED BY {}").format(role))
                admin.execute(psycopg.sql.SQL("DROP ROLE {}").format(role))


def test_a_worker_role_archives_into_the_history_and_keeps_its_partitions(as_role, conn):
    producer = TaskQueueClient(local_queue=as_role("producer"))
    task_id = producer.submit_task("t")
    conn.execute(
        "UPDATE omnispindle.tasks SET state = 'cancelled', finished_at = now() - interval '2 hours'"
        " WHERE id = %s",
        [task_id],
    )
    sweeper = Sweeper(as_role("worker").db, SweeperConfig(retention=86400.0, archive_after=1.0))
    assert sweeper.run_once().archived == 1
    assert producer.get_task(task_id)["state"] == "cancelled"
    assert producer.wait_for_task(task_id, timeout=10)["state"] == "cancelled"
    observed = conn.execute("SELECT count(*) FROM omnispindle.history_partitions").fetchone()[0]
    assert observed > 0


# Every privilege a role holds in the schema: on the schema, its tables and
# views (and their columns), and its functions.
PRIVILEGES = """
SELECT 'schema', n.nspname, a.privilege_type
FROM pg_namespace n, aclexplode(n.nspacl) a
WHERE n.nspname = 'omnispindle' AND a.grantee = %(role)s::regrole
UNION ALL
SELECT 'relation', c.relname, a.privilege_type
FROM pg_class c, aclexplode(c.relacl) a
WHERE c.relnamespace = 'omnispindle'::regnamespace AND a.grantee = %(role)s::regrole
UNION ALL
SELECT 'column', c.relname || '.' || t.attname, a.privilege_type
FROM pg_class c JOIN pg_attribute t ON t.attrelid = c.oid, aclexplode(t.attacl) a
WHERE c.relnamespace = 'omnispindle'::regnamespace AND a.grantee = %(role)s::regrole
UNION ALL
SELECT 'function', p.oid::regprocedure::text, a.privilege_type
FROM pg_proc p, aclexplode(p.proacl) a
WHERE p.pronamespace = 'omnispindle'::regnamespace AND a.grantee = %(role)s::regrole
"""


def privileges(conn: psycopg.Connection, role: str) -> set[tuple[str, str, str]]:
    return {tuple(row) for row in conn.execute(PRIVILEGES, {"role": role})}


def drop_roles(admin: psycopg.Connection, names) -> None:
    """Drop the roles of ``names`` that exist, with what they own and were granted."""
    for name in names:
        admin.execute(
            psycopg.sql.SQL(
                "DO $$ BEGIN IF EXISTS (SELECT FROM pg_roles WHERE rolname = {name}) "
                "THEN EXECUTE format('DROP OWNED BY %I; DROP ROLE %I', {name}, {name}); "
                "END IF; END $$"
            ).format(name=psycopg.sql.Literal(name))
        )


@pytest.mark.parametrize(
    "granted_at",
    ["0007_guarded_rows", "0008_dashboard", "0009_pause", "0010_scheduling", "0011_history"],
)
def test_a_role_granted_at_an_earlier_revision_holds_what_a_role_granted_now_holds(
    server_dsn, empty_dsn, granted_at
):
    """After the upgrade, each kind of access granted at an earlier revision
    holds exactly what grant_access gives today: a worker granted at 0007 could
    not take a maintenance lease, an observer not read the outcomes per minute."""
    upgrade(empty_dsn, granted_at)
    suffix = uuid.uuid4().hex[:8]
    old = {access: f"os_old_{access}_{suffix}" for access in ACCESS}
    new = {access: f"os_new_{access}_{suffix}" for access in ACCESS}
    with psycopg.connect(empty_dsn, autocommit=True) as admin:
        try:
            for access, name in old.items():
                admin.execute(
                    psycopg.sql.SQL("CREATE ROLE {} LOGIN").format(psycopg.sql.Identifier(name))
                )
                admin.execute("SELECT omnispindle.grant_access(%s::regrole, %s)", [name, access])
            upgrade(empty_dsn)
            for access, name in new.items():
                admin.execute(
                    psycopg.sql.SQL("CREATE ROLE {} LOGIN").format(psycopg.sql.Identifier(name))
                )
                admin.execute("SELECT omnispindle.grant_access(%s::regrole, %s)", [name, access])
            for access in ACCESS:
                missing = privileges(admin, new[access]) - privileges(admin, old[access])
                extra = privileges(admin, old[access]) - privileges(admin, new[access])
                assert (access, sorted(missing), sorted(extra)) == (access, [], [])
        finally:
            drop_roles(admin, [*old.values(), *new.values()])


def test_the_upgrade_adds_to_a_role_only_the_rights_of_the_access_it_was_told_by(
    server_dsn, empty_dsn
):
    """A role granted one right by hand, or granted access and then refused a
    right, gets from the upgrade no right of its kind of access beyond the
    missing ones: no reading of task parameters, no pausing, no DELETE again."""
    upgrade(empty_dsn, "0011_history")
    suffix = uuid.uuid4().hex[:8]
    names = {kind: f"os_hand_{kind}_{suffix}" for kind in ("dashboard", "submitter", "worker")}
    with psycopg.connect(empty_dsn, autocommit=True) as admin:
        try:
            for name in names.values():
                admin.execute(
                    psycopg.sql.SQL("CREATE ROLE {} LOGIN").format(psycopg.sql.Identifier(name))
                )
            role = {kind: psycopg.sql.Identifier(name) for kind, name in names.items()}
            admin.execute(
                psycopg.sql.SQL(
                    "GRANT USAGE ON SCHEMA omnispindle TO {dashboard}, {submitter}; "
                    "GRANT SELECT ON omnispindle.queue_summary TO {dashboard}; "
                    "GRANT EXECUTE ON FUNCTION omnispindle.submit_tasks TO {submitter}"
                ).format(**role)
            )
            admin.execute(
                "SELECT omnispindle.grant_access(%s::regrole, 'worker')", [names["worker"]]
            )
            admin.execute(
                psycopg.sql.SQL("REVOKE DELETE ON omnispindle.tasks FROM {}").format(role["worker"])
            )
            upgrade(empty_dsn)
            held = admin.execute(
                "SELECT has_table_privilege(%(d)s, 'omnispindle.task_details', 'SELECT'), "
                "has_table_privilege(%(s)s, 'omnispindle.tasks', 'SELECT'), "
                "has_function_privilege(%(s)s, 'omnispindle.pause_task_type(text, text)', "
                "'EXECUTE'), "
                "has_table_privilege(%(w)s, 'omnispindle.tasks', 'DELETE'), "
                "has_table_privilege(%(d)s, 'omnispindle.outcomes_per_minute', 'SELECT'), "
                "has_function_privilege(%(w)s, 'omnispindle.walks_one_type(text[])', 'EXECUTE')",
                {"d": names["dashboard"], "s": names["submitter"], "w": names["worker"]},
            ).fetchone()
            assert held == (False, False, False, False, True, True)
        finally:
            drop_roles(admin, names.values())


def test_an_observer_is_warned_of_tasks_no_live_worker_can_run(role_dsns, client, start_worker):
    """status and the metrics read the unclaimable tasks through a view alone."""
    start_worker({"t": lambda task: {}}, capabilities=["t"])
    client.pause_task_type("t")
    client.submit_task("t", required_capabilities=["gpu"])
    observer = role_dsns["observer"]

    def warned() -> str | None:
        # Until the worker has registered, no live worker runs the type.
        done = command("status", "--dsn", observer)
        assert done.returncode == 0, done.stderr
        return done.stdout if "warning: 1 ready tasks of type t wait" in done.stdout else None

    assert "they need gpu, which no live worker" in poll(warned, DEADLINE, interval=0.5)
    scraped = command("metrics", "--once", "--dsn", observer).stdout
    assert 'omnispindle_tasks_unclaimable{task_type="t"} 1.0' in scraped
