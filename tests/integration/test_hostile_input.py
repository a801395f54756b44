"""Hostile input: no row, value or exception takes a worker down or wedges a slot."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta

import psycopg
import psycopg.sql
import pytest
from psycopg.conninfo import make_conninfo

import omnispindle
from omnispindle import LockTimeoutError, TaskStateError, ValidationError
from omnispindle._db.sqlstate import translate
from omnispindle.migrate import upgrade

from ..acceptance.workers import poll

OMNISPINDLE = [sys.executable, "-m", "omnispindle"]


def nested(depth: int) -> list:
    value: list = []
    for _ in range(depth - 1):
        value = [value]
    return value


def deep_json(depth: int) -> str:
    """JSON text of lists nested ``depth`` deep, as SQL would write it."""
    return "[" * depth + "]" * depth


def count_tasks(conn) -> int:
    return conn.execute("SELECT count(*) FROM omnispindle.tasks").fetchone()[0]


# Finding 1: 985-990 deep passed validation and killed the worker that decoded
# it; 10,000 deep raised a raw RecursionError.
@pytest.mark.parametrize("depth", [201, 990, 10_000])
def test_parameters_nested_too_deep_are_refused_and_nothing_is_stored(client, conn, depth):
    with pytest.raises(ValidationError, match="more than 200 levels deep"):
        client.submit_task("t", {"x": nested(depth)})
    with pytest.raises(ValidationError, match="more than 200 levels deep"):
        client.submit_batch(
            [{"task_type": "t"}, {"task_type": "t", "parameters": {"x": nested(depth)}}]
        )
    assert count_tasks(conn) == 0


def test_nesting_up_to_the_limit_is_stored_and_read_back(client):
    value = {"x": nested(199)}  # the dict is the 200th level
    assert client.get_task(client.submit_task("t", value))["parameters"] == value


def test_brackets_inside_strings_do_not_count_as_nesting(client):
    value = {"text": "[" * 5000 + "{" * 5000}
    assert client.get_task(client.submit_task("t", value))["parameters"] == value


def test_a_poison_row_fails_alone_and_the_worker_keeps_serving(client, conn, start_worker):
    """Finding 1: a row written by SQL, too deep for Python, claimed with others."""
    poison = conn.execute(
        "INSERT INTO omnispindle.tasks (task_type, parameters) "
        "VALUES ('echo', jsonb_build_object('x', %s::jsonb)) RETURNING id",
        [deep_json(5000)],
    ).fetchone()[0]
    others = [client.submit_task("echo", {"n": n}) for n in range(5)]
    start_worker({"echo": lambda task: task["parameters"]}, concurrency=8)
    failed = client.wait_for_task(poison, timeout=30)
    assert failed["state"] == "failed"
    assert failed["error"]["type"] == "UnreadableTask"
    assert "parameters cannot be read" in failed["error"]["message"]
    for n, task_id in enumerate(others):
        assert client.wait_for_task(task_id, timeout=30)["result"] == {"n": n}
    assert client.wait_for_task(client.submit_task("echo", {"n": 9}), timeout=30)["state"] == (
        "succeeded"
    )


def test_a_parents_unreadable_result_fails_the_dependent_alone(client, conn, start_worker):
    """Finding 1: a result nested that deep killed whoever claimed its dependent."""
    parent = client.submit_task("parent")
    child = client.submit_task("child", dependencies=[parent])
    start_worker({"parent": lambda task: {"ok": True}})
    assert client.wait_for_task(parent, timeout=30)["state"] == "succeeded"
    conn.execute(
        "UPDATE omnispindle.tasks SET result = %s::jsonb WHERE id = %s", [deep_json(5000), parent]
    )
    start_worker({"child": lambda task: task["dependency_results"]})
    failed = client.wait_for_task(child, timeout=30)
    assert failed["error"]["type"] == "UnreadableTask"
    assert "parents' results cannot be read" in failed["error"]["message"]


def test_a_result_too_deep_fails_its_own_task(client, start_worker):
    start_worker({"deep": lambda task: nested(990)})
    failed = client.wait_for_task(client.submit_task("deep", max_retries=0), timeout=30)
    assert failed["error"]["type"] == "ResultNotSerializable"
    assert "more than 200 levels deep" in failed["error"]["message"]


def test_inspection_shows_an_unreadable_row_instead_of_raising(client, conn, dsn):
    """Finding 1: get_task and `omnispindle tasks ID` raised on such a row."""
    task_id = conn.execute(
        "INSERT INTO omnispindle.tasks (task_type, parameters) "
        "VALUES ('t', jsonb_build_object('x', %s::jsonb)) RETURNING id",
        [deep_json(5000)],
    ).fetchone()[0]
    record = client.get_task(task_id)
    assert isinstance(record["parameters"], omnispindle.UnreadableJson)
    assert "nested deeper" in str(record["parameters"])
    shown = subprocess.run(
        [*OMNISPINDLE, "tasks", str(task_id), "--dsn", dsn],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    assert "unreadable JSON" in shown.stdout


class HostileError(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no text for you")


class ExitingError(Exception):
    """Its ``__str__`` raises what a ``sys.exit()`` in a property or a hook would."""

    def __str__(self) -> str:
        raise SystemExit(1)


def hostile(error: type[Exception]):
    def raise_hostile(task):
        raise error

    return raise_hostile


def hostile_async(error: type[Exception]):
    async def raise_hostile_async(task):
        raise error

    return raise_hostile_async


@pytest.mark.parametrize(
    ("error", "raised"), [(HostileError, "RuntimeError"), (ExitingError, "SystemExit")]
)
@pytest.mark.parametrize("make", [hostile, hostile_async])
def test_an_exception_whose_str_raises_is_stored_and_frees_its_slot(
    client, start_worker, make, error, raised
):
    """Finding 2: the outcome was lost, and heartbeats held the slot and task for ever.
    A ``__str__`` raising SystemExit recorded a WorkerError without a message."""
    start_worker({"hostile": make(error), "fine": lambda task: {"ok": True}}, concurrency=1)
    failed = client.wait_for_task(client.submit_task("hostile", max_retries=0), timeout=30)
    assert failed["state"] == "failed"
    assert failed["error"]["type"].endswith(error.__name__)
    assert f"str() of this {error.__name__} raised {raised}" in failed["error"]["message"]
    assert "raise_hostile" in failed["error"]["traceback"]
    # The only slot is free again.
    assert client.wait_for_task(client.submit_task("fine"), timeout=30)["result"] == {"ok": True}


def test_a_runner_that_breaks_still_ends_the_attempt(client, start_worker, monkeypatch):
    """Whatever raises outside the executor, the attempt's end is stored."""
    from omnispindle._worker import _runners

    def broken(fn, row, context):
        raise RuntimeError("the runner broke")

    monkeypatch.setattr(_runners, "run_executor", broken)
    start_worker({"t": lambda task: {}}, concurrency=1)
    first = client.wait_for_task(client.submit_task("t", max_retries=0), timeout=30)
    second = client.wait_for_task(client.submit_task("t", max_retries=0), timeout=30)
    for failed in (first, second):
        assert failed["error"]["type"] == "WorkerError"
        assert failed["error"]["message"] == "the runner broke"


def test_async_tasks_keep_running_after_a_poison_row(client, conn, start_worker):
    async def echo(task):
        await asyncio.sleep(0)
        return task["parameters"]

    poison = conn.execute(
        "INSERT INTO omnispindle.tasks (task_type, parameters) "
        "VALUES ('echo', jsonb_build_object('x', %s::jsonb)) RETURNING id",
        [deep_json(5000)],
    ).fetchone()[0]
    start_worker({"echo": echo}, concurrency=4)
    assert client.wait_for_task(poison, timeout=30)["error"]["type"] == "UnreadableTask"
    assert client.wait_for_task(client.submit_task("echo", {"a": 1}), timeout=30)["result"] == {
        "a": 1
    }


def test_validation_errors_quote_a_short_prefix_of_the_value(client):
    """Finding 8: a 1 MB key gave a 1 MB message, and could leak a secret."""
    secret = "sk-" + "x" * 1_000_000
    with pytest.raises(ValidationError) as raised:
        client.submit_task("t", idempotency_key=secret)
    assert len(str(raised.value)) < 300
    assert "characters)" in str(raised.value)


# Finding 5: deleting a parent by SQL removed the edge but not the count.
def test_deleting_the_parent_of_a_waiting_task_is_refused(client, conn):
    parent = client.submit_task("parent")
    child = client.submit_task("child", dependencies=[parent])
    with pytest.raises(psycopg.Error) as raised:
        conn.execute("DELETE FROM omnispindle.tasks WHERE id = %s", [parent])
    assert raised.value.sqlstate == "OS007"
    assert f"cancel task {child} first" in raised.value.diag.message_hint
    assert isinstance(translate(raised.value), TaskStateError)
    with pytest.raises(psycopg.Error, match="cannot be deleted"):
        conn.execute("DELETE FROM omnispindle.task_dependencies WHERE task_id = %s", [child])
    assert client.get_task(child)["dependencies"] == [parent]


def test_a_workflow_deleted_whole_or_finished_can_go(client, conn, start_worker):
    parent = client.submit_task("parent")
    child = client.submit_task("child", dependencies=[parent])
    conn.execute("DELETE FROM omnispindle.tasks WHERE id = ANY(%s)", [[parent, child]])
    parent = client.submit_task("parent")
    child = client.submit_task("child", dependencies=[parent])
    client.cancel_task(child)
    conn.execute("DELETE FROM omnispindle.tasks WHERE id = %s", [parent])
    assert count_tasks(conn) == 1


def test_with_two_parents_the_child_never_runs_before_both(client, conn, start_worker):
    first, second = client.submit_task("parent"), client.submit_task("parent")
    child = client.submit_task("child", dependencies=[first, second])
    with pytest.raises(psycopg.Error, match="cannot be deleted"):
        conn.execute("DELETE FROM omnispindle.tasks WHERE id = %s", [second])
    start_worker({"parent": lambda task: {"id": task["task_id"]}, "child": lambda task: task})
    done = client.wait_for_task(child, timeout=30)
    assert set(done["result"]["dependency_results"]) == {str(first), str(second)}


def test_the_repair_pass_frees_a_blocked_task_left_without_edges(client, queue, conn):
    from omnispindle._maintenance.sweeper import Sweeper, SweeperConfig

    parent = client.submit_task("parent")
    child = client.submit_task("child", dependencies=[parent])
    # As a row from before the guard, or written with the trigger off.
    conn.execute("ALTER TABLE omnispindle.task_dependencies DISABLE TRIGGER USER")
    conn.execute("DELETE FROM omnispindle.task_dependencies WHERE task_id = %s", [child])
    conn.execute("ALTER TABLE omnispindle.task_dependencies ENABLE TRIGGER USER")
    conn.execute("UPDATE omnispindle.tasks SET created_at = now() - interval '1 minute'")
    assert Sweeper(queue.db, SweeperConfig(batch_size=5)).run_once().reconciled == 1
    assert client.get_task(child)["state"] == "pending"


# Finding 8: CHECKs accepted what the API refuses, and rows that never run or
# are never reclaimed.
@pytest.mark.parametrize(
    "assignment",
    [
        "timeout_seconds = 'NaN'",
        "timeout_seconds = 'Infinity'",
        "retry_backoff = 'NaN'",
        "retry_backoff = 'Infinity'",
        "attempts = max_attempts",
    ],
)
def test_sql_cannot_write_what_the_api_refuses(client, conn, assignment):
    task_id = client.submit_task("t")
    with pytest.raises(psycopg.Error) as raised:
        conn.execute(f"UPDATE omnispindle.tasks SET {assignment} WHERE id = %s", [task_id])
    assert isinstance(translate(raised.value), ValidationError)


def test_a_lease_cannot_reach_a_century_ahead(client, conn, start_worker):
    release = threading.Event()
    start_worker({"slow": lambda task: release.wait(30)})
    task_id = client.submit_task("slow")
    poll(lambda: client.get_task(task_id)["state"] == "running", timeout=30)
    try:
        with pytest.raises(psycopg.Error, match="at most a day ahead") as raised:
            conn.execute(
                "UPDATE omnispindle.tasks SET lease_expires_at = now() + interval '100 years' "
                "WHERE id = %s",
                [task_id],
            )
        assert isinstance(translate(raised.value), ValidationError)
    finally:
        release.set()


def test_a_cancel_reason_with_nul_is_a_validation_error(client):
    task_id = client.submit_task("t")
    with pytest.raises(ValidationError, match="reason"):
        client.cancel_task(task_id, reason="x\x00")
    assert client.get_task(task_id)["state"] == "pending"


def spam_ready_channel(dsn: str, seconds: float, payload: str = "") -> int:
    """NOTIFY the ready channel as fast as one connection can; how many were sent."""
    sent = 0
    with psycopg.connect(dsn, autocommit=True) as spammer:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            spammer.execute("SELECT pg_notify('omnispindle_ready', %s)", [payload])
            sent += 1
    return sent


def test_a_notify_flood_does_not_become_a_claim_flood(client, dsn, start_worker, record_statements):
    """Finding 7: 37,511 notifications in 3 s made an idle worker run 640 claim steps."""
    start_worker({"t": lambda task: {"ok": True}}, poll_interval=5.0)
    assert client.wait_for_task(client.submit_task("t"), timeout=30)["state"] == "succeeded"
    log = record_statements()
    sent = spam_ready_channel(dsn, 2.0)
    claims = log.names.count("complete_and_claim")
    assert sent > 2000
    assert claims <= 2.0 / 0.02 + 20, f"{claims} claim steps for {sent} notifications"
    # Real work announced in the flood still runs at once.
    flood = threading.Thread(target=spam_ready_channel, args=(dsn, 2.0))
    flood.start()
    try:
        started = time.monotonic()
        assert client.wait_for_task(client.submit_task("t"), timeout=30)["state"] == "succeeded"
        assert time.monotonic() - started < 2.0
    finally:
        flood.join()


@pytest.mark.parametrize("payload", ["nan", "inf", "-inf", "1e308", "garbage"])
def test_a_hostile_notify_payload_is_only_a_wake_up(client, dsn, start_worker, payload):
    start_worker({"t": lambda task: {"ok": True}}, poll_interval=5.0)
    spam_ready_channel(dsn, 0.5, payload)
    assert client.wait_for_task(client.submit_task("t"), timeout=30)["state"] == "succeeded"


def test_a_held_migration_key_makes_migrate_fail_in_bounded_time(
    empty_dsn, server_dsn, monkeypatch
):
    """Finding 3: any role that can connect could hang every migrating command."""
    from omnispindle._core import defaults

    monkeypatch.setattr(defaults, "LOCK_TIMEOUT", 1.0)
    role = f"outsider_{os.getpid()}"
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        admin.execute(psycopg.sql.SQL("CREATE ROLE {} LOGIN").format(psycopg.sql.Identifier(role)))
    try:
        with psycopg.connect(make_conninfo(empty_dsn, user=role), autocommit=True) as outsider:
            outsider.execute("SELECT pg_advisory_lock(hashtext('omnispindle.migrate'))")
            started = time.monotonic()
            with pytest.raises(LockTimeoutError):
                upgrade(empty_dsn)
            assert time.monotonic() - started < 20
        upgrade(empty_dsn)  # once the key is free, it migrates
    finally:
        with psycopg.connect(server_dsn, autocommit=True) as admin:
            admin.execute(psycopg.sql.SQL("DROP ROLE {}").format(psycopg.sql.Identifier(role)))


def test_an_idempotency_key_is_no_lock_an_outsider_can_hold(client, dsn, conn):
    """Finding 3: holding one key's advisory lock hung that submit for ever."""
    holder = psycopg.connect(dsn, autocommit=True)
    holder.execute(
        "SELECT pg_advisory_lock(hashtext('omnispindle.idempotency_key'), hashtext('order-1'))"
    )
    try:
        started = time.monotonic()
        first = client.submit_task("t", idempotency_key="order-1")
        assert client.submit_task("t", idempotency_key="order-1") == first
        assert time.monotonic() - started < 5
    finally:
        holder.close()
    # Only a submitter of the same key makes a submit wait: at most ten seconds.
    with psycopg.connect(dsn) as producer:
        producer.execute("SELECT omnispindle.enqueue('t', idempotency_key => 'order-2')")
        started = time.monotonic()
        with pytest.raises(LockTimeoutError):
            client.submit_task("t", idempotency_key="order-2")
        assert 5 < time.monotonic() - started < 30
        assert client.submit_task("t", idempotency_key="order-3") > 0  # other keys pass
        producer.rollback()
    assert client.submit_task("t", idempotency_key="order-2") > 0
    assert count_tasks(conn) == 3


def test_the_prune_lock_is_a_row_no_outsider_can_take(queue, client, dsn, conn, monkeypatch):
    """Finding 3: any role that could connect could hold the prune key for ever."""
    from omnispindle._core import defaults
    from omnispindle._maintenance.sweeper import Sweeper, SweeperConfig

    role = f"outsider_{os.getpid()}"
    identifier = psycopg.sql.Identifier(role)
    conn.execute(psycopg.sql.SQL("CREATE ROLE {} LOGIN").format(identifier))
    try:
        with psycopg.connect(make_conninfo(dsn, user=role)) as outsider:
            outsider.execute("SELECT pg_advisory_lock(hashtext('omnispindle.prune'))")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                outsider.execute("SELECT * FROM omnispindle.maintenance_locks FOR UPDATE")
            outsider.rollback()
            client.cancel_task(client.submit_task("t"))
            # The old key held, pruning goes on.
            assert queue.prune(older_than=0.001) == 1
    finally:
        conn.execute(psycopg.sql.SQL("DROP ROLE {}").format(identifier))
    # A pruner holding the row: the sweeper skips, an explicit prune fails in bounded time.
    monkeypatch.setattr(defaults, "LOCK_TIMEOUT", 1.0)
    client.cancel_task(client.submit_task("t"))
    with psycopg.connect(dsn) as pruner:
        pruner.execute("SELECT * FROM omnispindle.maintenance_locks FOR UPDATE")
        assert Sweeper(queue.db, SweeperConfig(retention=0.001)).run_once().pruned == 0
        started = time.monotonic()
        with pytest.raises(LockTimeoutError):
            queue.prune(older_than=0.001)
        assert time.monotonic() - started < 20
    assert queue.prune(older_than=0.001) == 1


# Finding 6: no size or volume limits.
@pytest.fixture
def limits():
    """Set limits for one test; the defaults come back after it."""
    before = omnispindle.set_limits()
    yield omnispindle.set_limits
    omnispindle.set_limits(**vars(before))


def test_parameters_over_the_limit_are_refused_and_nothing_is_stored(client, conn, limits):
    """200 MB parameters were accepted (client about 1.2 GB, worker about 1 GB above baseline)."""
    big = {"blob": "x" * (1024 * 1024)}
    with pytest.raises(ValidationError, match="over the limit of 1,048,576"):
        client.submit_task("t", big)
    with pytest.raises(ValidationError, match="over the limit"):
        client.submit_batch([{"task_type": "t"}, {"task_type": "t", "parameters": big}])
    assert count_tasks(conn) == 0
    limits(parameters_bytes=4 * 1024 * 1024)
    assert client.get_task(client.submit_task("t", big))["parameters"] == big


def test_the_database_refuses_what_sql_writes_beyond_its_ceilings(client, conn):
    with pytest.raises(psycopg.Error) as raised:
        conn.execute(
            "INSERT INTO omnispindle.tasks (task_type, parameters) "
            "VALUES ('t', jsonb_build_object('x', repeat('y', 70 * 1024 * 1024)))"
        )
    assert isinstance(translate(raised.value), ValidationError)
    assert raised.value.diag.constraint_name == "tasks_parameters_size"
    with pytest.raises(psycopg.Error, match="tasks_required_capabilities_size"):
        conn.execute(
            "INSERT INTO omnispindle.tasks (task_type, required_capabilities) "
            "SELECT 't', array_agg(g::text) FROM generate_series(1, 10000) g"
        )
    task_id = client.submit_task("t")
    with pytest.raises(psycopg.Error, match="task_stream_length"):
        conn.execute(
            "INSERT INTO omnispindle.task_stream (task_id, seq, attempt, payload) "
            "VALUES (%s, 100001, 1, '{}')",
            [task_id],
        )
    assert count_tasks(conn) == 1


def test_required_capabilities_are_bounded_in_number_and_length(client, conn):
    """10,000 entries, and 1 MB strings, were accepted."""
    with pytest.raises(ValidationError, match="over the limit of 64"):
        client.submit_task("t", required_capabilities=[f"c{n}" for n in range(65)])
    with pytest.raises(ValidationError, match="at most 200 characters"):
        client.submit_task("t", required_capabilities=["c" * 201])
    assert count_tasks(conn) == 0
    assert client.submit_task("t", required_capabilities=[f"c{n}" for n in range(64)]) > 0


def test_a_result_over_the_limit_fails_its_task_and_the_worker_goes_on(
    client, start_worker, limits
):
    limits(result_bytes=1000)
    start_worker({"big": lambda task: {"blob": "x" * 2000}, "small": lambda task: {"ok": 1}})
    failed = client.wait_for_task(client.submit_task("big", max_retries=0), timeout=30)
    assert failed["error"]["type"] == "ResultNotSerializable"
    assert "over the limit of 1,000" in failed["error"]["message"]
    assert client.wait_for_task(client.submit_task("small"), timeout=30)["result"] == {"ok": 1}


def test_partial_results_are_bounded_each_and_in_total(client, start_worker, limits):
    """Unbounded partial results per task."""
    limits(partial_result_bytes=100, stream_bytes=250)
    refusals: list[str] = []

    def chatty(task):
        context = omnispindle.current_task()
        context.emit({"n": 1})
        for payload in ({"blob": "x" * 200}, *[{"chunk": "y" * 40}] * 10):
            try:
                context.emit(payload)
            except ValidationError as refused:
                refusals.append(str(refused))
        return {"done": True}

    start_worker({"chatty": chatty})
    task_id = client.submit_task("chatty")
    assert client.wait_for_task(task_id, timeout=30)["result"] == {"done": True}
    assert "over the limit of 100" in refusals[0]
    assert any("partial results would take" in refusal for refusal in refusals[1:])
    partials = [e for e in client.stream_task(task_id, timeout=10) if e["kind"] == "partial"]
    # {"n": 1} is 8 bytes, each chunk 53: four chunks fit in 250, the fifth would not.
    assert [len(p["data"].get("chunk", "")) for p in partials] == [0, 40, 40, 40, 40]


BIG_ROW = (
    "INSERT INTO omnispindle.tasks (task_type, parameters) "
    "SELECT 'big', jsonb_build_object('blob', string_agg(md5(random()::text), '')) "
    "FROM generate_series(1, 1200000)"  # about 38 MB of text that does not compress
)
CLAIM = (
    "SELECT id FROM omnispindle.claim_tasks(ARRAY['big'], ARRAY[]::text[], 10, "
    "gen_random_uuid(), 30)"
)


def test_a_claim_is_bounded_in_bytes_as_well_as_in_tasks(conn):
    """Finding 6: a worker could claim a concurrency's worth of huge rows at once."""
    for _ in range(3):
        conn.execute(BIG_ROW)
    sizes = conn.execute("SELECT pg_column_size(parameters) FROM omnispindle.tasks").fetchall()
    assert all(30_000_000 < size < 64 * 2**20 for (size,) in sizes)
    # Up to 64 MiB: the second task starts within the budget, the third does not.
    assert len(conn.execute(CLAIM).fetchall()) == 2
    assert len(conn.execute(CLAIM).fetchall()) == 1
    assert conn.execute(CLAIM).fetchall() == []


def test_limits_are_checked_when_set(limits):
    with pytest.raises(ValidationError, match="no limit is called"):
        limits(parameter_bytes=10)
    with pytest.raises(ValidationError, match="from 1 to 67108864"):
        limits(parameters_bytes=10**9)
    with pytest.raises(ValidationError):
        limits(result_bytes=0)
    assert omnispindle.set_limits().parameters_bytes == 1024 * 1024


def test_a_huge_timeout_is_refused_and_an_old_one_breaks_no_heartbeat_or_sweep(
    client, conn, queue, start_worker
):
    """A 1e300 s timeout was accepted; past its lease it failed every sweep and every
    heartbeat of its worker with 'timestamp out of range'."""
    from omnispindle._maintenance.sweeper import Sweeper, SweeperConfig

    with pytest.raises(ValidationError, match="at most 1e"):
        client.submit_task("t", timeout=1e300)
    insert = (
        "INSERT INTO omnispindle.tasks (task_type, timeout_seconds) VALUES (%s, 1e300) RETURNING id"
    )
    with pytest.raises(psycopg.Error, match="tasks_timeout_bounded"):
        conn.execute(insert, ["t"])
    # Rows written before the rule (it leaves old rows as they were).
    conn.execute("DROP TRIGGER tasks_check_request ON omnispindle.tasks")
    stranded = conn.execute(insert, ["stranded"]).fetchone()[0]
    conn.execute(
        "UPDATE omnispindle.tasks SET state = 'running', attempts = 1, started_at = now(), "
        "lease_token = gen_random_uuid(), lease_expires_at = now() - interval '1 minute' "
        "WHERE id = %s",
        [stranded],
    )
    assert Sweeper(queue.db, SweeperConfig()).run_once().requeued == 1
    release = threading.Event()
    start_worker(
        {"slow": lambda task: release.wait(30) and {"ok": True}},
        lease_timeout=1.0,
        heartbeat_interval=0.1,
    )
    slow = conn.execute(insert, ["slow"]).fetchone()[0]
    poll(lambda: client.get_task(slow)["state"] == "running", timeout=30)
    first = lease_end(conn, slow)
    # Heartbeats renew the lease well past its first end: none failed.
    poll(lambda: lease_end(conn, slow) > first + timedelta(seconds=1.5), timeout=30)
    assert client.get_task(slow)["attempts"] == 1
    release.set()
    assert client.wait_for_task(slow, timeout=30)["result"] == {"ok": True}


def lease_end(conn, task_id: int) -> datetime:
    return conn.execute(
        "SELECT lease_expires_at FROM omnispindle.tasks WHERE id = %s", [task_id]
    ).fetchone()[0]


@pytest.mark.slow  # about 30 s and a few GB between the worker and the server
def test_results_too_large_together_for_one_statement_are_all_stored(
    client, conn, start_worker, limits
):
    """Nine results of 64 MiB each finishing at once: their step's statement came
    to over 1 GB, which Postgres refuses by closing the connection; the worker
    tried the same step again and again, its tasks running for ever, and did
    not stop."""
    limits(result_bytes=64 * 1024 * 1024)
    count = 9
    together = threading.Barrier(count)

    def quotes(task):
        together.wait(60)
        # 32 Mi quotes: 64 MiB as JSON, twice that in a statement.
        return '"' * (32 * 1024 * 1024 - 8) + str(task["parameters"]["n"])

    start_worker({"quotes": quotes}, concurrency=count, shutdown_timeout=30)
    ids = client.submit_batch(
        [{"task_type": "quotes", "parameters": {"n": n}, "max_retries": 0} for n in range(count)]
    )
    # Read in SQL: the client would fetch 576 MiB.
    every_task = (
        "SELECT id, state, result FROM omnispindle.tasks "
        "UNION ALL SELECT id, state, result FROM omnispindle.task_history"
    )
    poll(
        lambda: (
            conn.execute(
                f"SELECT count(*) FROM ({every_task}) t WHERE state IN ('succeeded', 'failed')"
            ).fetchone()[0]
            == count
        ),
        timeout=120,
        interval=0.5,
    )
    stored = conn.execute(
        f"SELECT id, state, right(result #>> '{{}}', 1) FROM ({every_task}) t ORDER BY id"
    ).fetchall()
    assert stored == [(task_id, "succeeded", str(n)) for n, task_id in enumerate(ids)]
