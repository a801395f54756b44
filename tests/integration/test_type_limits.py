"""Limits on a task type: running tasks at once and starts per second, global
across workers, enforced inside the claim."""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
import uuid

import psycopg
import pytest

from omnispindle import AsyncTaskQueueClient, ValidationError
from omnispindle._db import queries as q

from .test_roles import command

DEADLINE = 30


def claim_query(task_types, limit=100, worker_id=None):
    """A claim by ``worker_id``, or by a fresh worker id."""
    return q.tasks.claim_tasks(
        task_types=list(task_types),
        capabilities=[],
        limit=limit,
        worker_id=worker_id or uuid.uuid4(),
        lease_seconds=30,
    )


def claim(queue, task_types, limit=100):
    """One claim by a fresh worker id: the task types of the rows it took."""
    return [row["task_type"] for row in queue.db.run(claim_query(task_types, limit))]


def finish(conn, count, task_type):
    """Complete ``count`` running tasks of ``task_type`` as their worker would."""
    conn.execute(
        "SELECT omnispindle.complete_attempts(array_agg(id), array_agg(lease_token), "
        "array_agg('{}'::jsonb)) FROM (SELECT id, lease_token FROM omnispindle.tasks "
        "WHERE state = 'running' AND task_type = %s ORDER BY id LIMIT %s) r",
        [task_type, count],
    )


def poll(condition, timeout=DEADLINE):
    deadline = time.monotonic() + timeout
    while not (found := condition()):
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)
    return found


def test_a_running_limit_holds_across_workers_until_a_task_finishes(client, queue, conn):
    client.set_task_type_limit("capped", max_running=2)
    for _ in range(5):
        client.submit_task("capped")
    assert claim(queue, ["capped"]) == ["capped", "capped"]
    assert claim(queue, ["capped"]) == []  # another worker: no room
    [limit] = client.task_type_limits()
    assert (limit["running"], limit["ready"], limit["held_back"]) == (2, 3, 3)
    finish(conn, 1, "capped")
    assert claim(queue, ["capped"]) == ["capped"]
    assert claim(queue, ["capped"]) == []


def test_a_rate_limit_grants_its_burst_then_a_start_per_token(client, queue):
    client.set_task_type_limit("rated", starts_per_second=5, burst=2)
    for _ in range(10):
        client.submit_task("rated")
    began = time.monotonic()
    claimed = len(claim(queue, ["rated"]))
    assert claimed == 2
    while claimed < 5:
        claimed += len(claim(queue, ["rated"]))
        # Never more than the burst and the tokens come due since.
        assert claimed <= 2 + 5 * (time.monotonic() - began)
        assert time.monotonic() - began < DEADLINE
    assert time.monotonic() - began >= (5 - 2) / 5
    [limit] = client.task_type_limits()
    assert (limit["running"], limit["ready"]) == (5, 5)
    assert limit["tokens"] < 2


def test_a_limited_type_keeps_its_share_of_a_claim_against_a_flood(client, queue):
    client.set_task_type_limit("capped", max_running=1)
    client.submit_batch([{"task_type": "flood", "priority": 10} for _ in range(50)])
    client.submit_task("capped")
    claimed = claim(queue, ["flood", "capped"], limit=5)
    assert sorted(claimed) == ["capped", "flood", "flood", "flood", "flood"]


def test_a_claim_waits_a_moment_for_a_limited_types_row_then_goes_on(client, queue, dsn):
    """Two workers drained a limited type at a third of the rate of one without
    limits: a claim that found the type's row held by another claim skipped the
    type at once and came back with nothing."""
    client.set_task_type_limit("held", max_running=10)
    client.submit_task("held")
    client.submit_task("free")
    with psycopg.connect(dsn) as holder:  # a transaction left open on the row
        holder.execute(
            "SELECT 1 FROM omnispindle.task_type_limits WHERE task_type = 'held' FOR UPDATE"
        )
        began = time.monotonic()
        taken = claim(queue, ["held", "free"])
        waited = time.monotonic() - began
        holder.rollback()
    assert taken == ["free"]  # the other types are still claimed
    assert 0.02 <= waited < 1.0, waited  # it waited for the row, and not for ever
    assert claim(queue, ["held"]) == ["held"]


def waiting_for_a_lock(conn, function: str) -> bool:
    """Whether a statement that calls ``function`` waits for a lock now, in
    ``conn``'s database (not in another test run's on the same server)."""
    return conn.execute(
        "SELECT count(*) > 0 FROM pg_stat_activity "
        "WHERE wait_event_type = 'Lock' AND query LIKE '%%' || %s || '%%' "
        "AND datname = current_database()",
        [function],
    ).fetchone()[0]


def claim_while_the_limits_are_replaced(queue, dsn, conn) -> list[str]:
    """A claim of "replaced" made while a transaction clears its limits and sets a
    running limit of 1 again, which commits once the claim waits for the row."""
    outcome: dict[str, list[str]] = {}

    def claimer() -> None:
        outcome["taken"] = claim(queue, ["replaced"])

    with psycopg.connect(dsn) as holder:
        holder.execute("SELECT omnispindle.clear_task_type_limit('replaced')")
        holder.execute("SELECT omnispindle.set_task_type_limit('replaced', max_running => 1)")
        thread = threading.Thread(target=claimer)
        thread.start()
        deadline = time.monotonic() + DEADLINE
        while "taken" not in outcome and not waiting_for_a_lock(conn, "claim_tasks"):
            assert time.monotonic() < deadline, "the claim neither waited nor ended"
        holder.commit()
        thread.join(DEADLINE)
    return outcome["taken"]


def test_a_claim_that_waited_while_the_limits_were_replaced_keeps_the_new_ones(
    client, queue, dsn, conn
):
    """A transaction cleared a type's limits and set them again (a delete and an
    insert) while a claim waited for the row: the claim found the old row gone
    and the new one outside its snapshot, took the limits for cleared, and
    started all 8 tasks under a running limit of 1."""
    client.set_task_type_limit("replaced", max_running=1)
    for _ in range(8):
        client.submit_task("replaced")
    # The commit must come within the claim's 20 ms wait for the row: a try whose
    # claim gave up first took nothing, and the next one tries again.
    for _ in range(20):
        taken = claim_while_the_limits_are_replaced(queue, dsn, conn)
        if taken:
            break
    assert taken == ["replaced"]
    [limit] = client.task_type_limits()
    assert (limit["max_running"], limit["running"]) == (1, 1)


def test_a_claim_waits_for_a_table_lock_as_long_as_it_takes(client, queue, dsn, conn):
    """The wait for a limited type's row was a lock_timeout of 20 ms on the whole
    claim: a claim of any type failed while an index build held the table."""
    task_id = client.submit_task("plain")
    outcome: dict[str, object] = {}
    with psycopg.connect(dsn) as holder:
        holder.execute("LOCK TABLE omnispindle.tasks IN SHARE MODE")

        def claimer() -> None:
            try:
                outcome["ids"] = [row["id"] for row in queue.db.run(claim_query(["plain"]))]
            except Exception as exc:  # the test reports it
                outcome["error"] = exc

        thread = threading.Thread(target=claimer)
        thread.start()
        poll(
            lambda: "error" in outcome or waiting_for_a_lock(conn, "claim_tasks"),
            timeout=10,
        )
        holder.commit()
        thread.join(DEADLINE)
    assert outcome == {"ids": [task_id]}


def test_a_worker_of_limited_types_alone_does_not_walk_their_backlog(client, queue, dsn):
    """After its limited pass, a claim walked the ready index for the worker's
    other types; with none, it stepped over every ready task of the limited type."""
    client.set_task_type_limit("backlogged", max_running=1)
    client.submit_batch([{"task_type": "backlogged"}] * 2000)
    assert claim(queue, ["backlogged"]) == ["backlogged"]
    with psycopg.connect(dsn) as conn:  # one transaction: its own statistics
        conn.execute(
            "SELECT count(*) FROM omnispindle.claim_tasks(ARRAY['backlogged'], ARRAY[]::text[], "
            "10, gen_random_uuid(), 30)"
        )
        fetched = xact_tasks_fetched(conn)
    assert fetched < 100, fetched


CLAIM_3_RARE = (
    "SELECT priority FROM omnispindle.claim_tasks(ARRAY['rare'], ARRAY[]::text[], "
    "3, gen_random_uuid(), 30)"
)


def xact_tasks_fetched(conn) -> int:
    """Rows of tasks this transaction fetched through an index, so far."""
    return conn.execute(
        "SELECT idx_tup_fetch FROM pg_stat_xact_user_tables "
        "WHERE schemaname = 'omnispindle' AND relname = 'tasks'"
    ).fetchone()[0]


@pytest.mark.parametrize("grouped", [False, True], ids=["plain", "grouped"])
def test_a_limited_types_claim_does_not_step_over_other_types_ready_tasks(
    client, queue, dsn, conn, grouped
):
    """Its pass walked the ready index in priority order, over every ready task of
    other types ahead of its own: each claim read them all. (Statistics that see
    group keys elsewhere once made its check for group keys walk them too.)"""
    key = {"group_key": "g"} if grouped else {}
    client.submit_batch([{"task_type": "common", **key}] * 2000)
    conn.execute("ANALYZE omnispindle.tasks")
    client.set_task_type_limit("rare", max_running=10)
    client.submit_batch([{"task_type": "rare", "priority": p} for p in (0, 3, 0, 7)])
    with psycopg.connect(dsn) as fresh:  # one transaction: its own statistics
        claimed = fresh.execute(CLAIM_3_RARE).fetchall()
        fetched = xact_tasks_fetched(fresh)
    assert sorted((row[0] for row in claimed), reverse=True) == [7, 3, 0]
    assert fetched < 100, fetched


def test_a_limited_types_check_for_group_keys_reads_no_backlog(client, queue, dsn, conn):
    """The check of a limited type for pending tasks with a group key is one
    probe, also when the statistics see group keys (finished tasks' here)."""
    client.set_task_type_limit("rare", max_running=10_000)
    client.submit_batch([{"task_type": "rare", "group_key": "g"}] * 600)
    claim(queue, ["rare"], limit=600)
    finish(conn, 600, "rare")
    client.submit_batch([{"task_type": "rare"}] * 2000)
    conn.execute("ANALYZE omnispindle.tasks")
    with psycopg.connect(dsn) as fresh:  # a session whose plans are made now
        assert len(fresh.execute(CLAIM_3_RARE).fetchall()) == 3
        fetched = xact_tasks_fetched(fresh)
    assert fetched < 100, fetched


def test_a_limited_type_with_group_keys_is_claimed_in_priority_order_across_groups(client, conn):
    client.set_task_type_limit("grouped", max_running=10)
    client.submit_batch(
        [
            {"task_type": "grouped", "group_key": "a", "priority": 1},
            {"task_type": "grouped", "priority": 9},
            {"task_type": "grouped", "group_key": "b", "priority": 5},
        ]
    )
    for expected in (9, 5, 1):
        claimed = conn.execute(
            "SELECT priority FROM omnispindle.claim_tasks(ARRAY['grouped'], ARRAY[]::text[], "
            "1, gen_random_uuid(), 30)"
        ).fetchall()
        assert claimed == [(expected,)]


def test_a_paused_limited_type_is_not_claimed(client, queue):
    client.set_task_type_limit("capped", max_running=5)
    client.submit_task("capped")
    client.pause_task_type("capped")
    assert claim(queue, ["capped"]) == []
    client.resume_task_type("capped")
    assert claim(queue, ["capped"]) == ["capped"]


def test_clearing_a_limit_frees_its_held_back_tasks(client, queue):
    client.set_task_type_limit("capped", max_running=1)
    for _ in range(3):
        client.submit_task("capped")
    assert len(claim(queue, ["capped"])) == 1
    assert claim(queue, ["capped"]) == []
    assert client.clear_task_type_limit("capped") is True
    assert client.clear_task_type_limit("capped") is False
    assert len(claim(queue, ["capped"])) == 2
    assert client.task_type_limits() == []


def test_setting_again_replaces_both_limits(client):
    client.set_task_type_limit("t", max_running=4, starts_per_second=10)
    client.set_task_type_limit("t", starts_per_second=2.5)
    [limit] = client.task_type_limits()
    assert (limit["max_running"], limit["starts_per_second"], limit["burst"]) == (None, 2.5, 3)
    assert limit["tokens"] <= 3


def test_a_rate_limit_gives_way_to_a_running_limit_alone(client, queue):
    """Setting only max_running on a rated type failed: the bucket kept its tokens."""
    client.set_task_type_limit("t", starts_per_second=5)
    client.set_task_type_limit("t", max_running=3)
    [limit] = client.task_type_limits()
    assert (limit["max_running"], limit["starts_per_second"], limit["tokens"]) == (3, None, None)
    client.set_task_type_limit("t", starts_per_second=2)
    [limit] = client.task_type_limits()
    assert (limit["max_running"], limit["burst"], limit["tokens"]) == (None, 2, 2.0)


def test_a_worker_never_runs_more_than_the_limit_and_drains_the_type(client, start_worker):
    lock = threading.Lock()
    running = [0, 0]  # now, most at once

    def capped(task):
        with lock:
            running[0] += 1
            running[1] = max(running[1], running[0])
        time.sleep(0.02)
        with lock:
            running[0] -= 1
        return {}

    client.set_task_type_limit("capped", max_running=2)
    start_worker({"capped": capped}, concurrency=8)
    ids = client.submit_batch([{"task_type": "capped"} for _ in range(30)])
    tasks = client.wait_for_batch(ids, timeout=DEADLINE)
    assert {t["state"] for t in tasks} == {"succeeded"}
    assert running[1] == 2


def test_a_worker_starts_a_rated_type_no_faster_than_its_rate(client, start_worker):
    starts: list[float] = []
    client.set_task_type_limit("rated", starts_per_second=20, burst=1)
    start_worker({"rated": lambda task: starts.append(time.monotonic()) or {}}, concurrency=8)
    ids = client.submit_batch([{"task_type": "rated"} for _ in range(30)])
    tasks = client.wait_for_batch(ids, timeout=DEADLINE)
    assert {t["state"] for t in tasks} == {"succeeded"}
    # 30 starts from a bucket of 1 refilled at 20/s take at least 29/20 s.
    assert max(starts) - min(starts) >= 29 / 20 * 0.9


@pytest.mark.parametrize(
    "limits",
    [
        {},
        {"max_running": 0},
        {"max_running": -1},
        {"max_running": True},
        {"max_running": 2.5},
        {"max_running": 10**12},
        {"starts_per_second": 0},
        {"starts_per_second": -3},
        {"starts_per_second": math.nan},
        {"starts_per_second": math.inf},
        {"starts_per_second": 2e6},
        {"starts_per_second": 5e-324},
        {"starts_per_second": 1e-10},
        {"starts_per_second": "5"},
        {"max_running": 3, "burst": 5},
        {"starts_per_second": 5, "burst": 0},
    ],
)
def test_bad_limits_are_a_validation_error_that_changes_nothing(client, limits):
    client.set_task_type_limit("kept", max_running=7)
    with pytest.raises(ValidationError):
        client.set_task_type_limit("kept", **limits)
    [kept] = client.task_type_limits()
    assert (kept["max_running"], kept["starts_per_second"]) == (7, None)


@pytest.mark.parametrize("task_type", ["", None, "x" * 201, 5])
def test_a_bad_task_type_is_a_validation_error(client, task_type):
    with pytest.raises(ValidationError):
        client.set_task_type_limit(task_type, max_running=1)
    with pytest.raises(ValidationError):
        client.clear_task_type_limit(task_type)
    assert client.task_type_limits() == []


@pytest.mark.parametrize(
    "statement",
    [
        "SELECT omnispindle.set_task_type_limit(NULL, 1)",
        "SELECT omnispindle.set_task_type_limit('', 1)",
        "SELECT omnispindle.set_task_type_limit(repeat('x', 201), 1)",
        "SELECT omnispindle.set_task_type_limit('t')",
        "SELECT omnispindle.set_task_type_limit('t', 0)",
        "SELECT omnispindle.set_task_type_limit('t', starts_per_second => 'NaN')",
        "SELECT omnispindle.set_task_type_limit('t', starts_per_second => 'Infinity')",
        "SELECT omnispindle.set_task_type_limit('t', starts_per_second => 0)",
        "SELECT omnispindle.set_task_type_limit('t', starts_per_second => 5e-324)",
        "SELECT omnispindle.set_task_type_limit('t', starts_per_second => 1e-10)",
        "SELECT omnispindle.set_task_type_limit('t', 1, burst => 2)",
        "SELECT omnispindle.set_task_type_limit('t', starts_per_second => 1, burst => 0)",
        "SELECT omnispindle.clear_task_type_limit('')",
    ],
)
def test_the_sql_functions_refuse_bad_input(conn, statement):
    with pytest.raises(psycopg.Error) as refused:
        conn.execute(statement)
    assert refused.value.sqlstate == "OS005"
    assert conn.execute("SELECT count(*) FROM omnispindle.task_type_limits").fetchone() == (0,)


@pytest.mark.parametrize(
    "statement",
    [
        (
            "INSERT INTO omnispindle.task_type_limits (task_type, starts_per_second, burst, "
            "tokens) VALUES ('t', 5e-324, 1, 1)"
        ),
        (
            "INSERT INTO omnispindle.task_type_limits (task_type, "
            "starts_per_second_per_group) VALUES ('t', 5e-324)"
        ),
    ],
)
def test_a_rate_too_small_to_refill_a_bucket_is_refused_by_the_table(
    client, queue, conn, statement
):
    with pytest.raises(psycopg.errors.CheckViolation):
        conn.execute(statement)
    # Stored, it failed every claim that reached the type, for the other types too
    # (value out of range: underflow, as the refill's product came out 0).
    client.submit_task("other")
    assert claim(queue, ["t", "other"]) == ["other"]


def test_the_async_client_sets_and_clears_limits(dsn):
    async def main():
        async with AsyncTaskQueueClient(dsn=dsn) as client:
            await client.set_task_type_limit("t", max_running=3, starts_per_second=1.5)
            [limit] = await client.task_type_limits()
            assert (limit["max_running"], limit["burst"]) == (3, 2)
            assert await client.clear_task_type_limit("t") is True
            return await client.task_type_limits()

    assert asyncio.run(main()) == []


def test_the_command_sets_clears_and_status_shows_limits(dsn, client):
    done = command(
        "limit", "reports", "--max-running", "3", "--starts-per-second", "2", "--dsn", dsn
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "task type reports limited: at most 3 running, at most 2 starts/s\n"
    [limit] = json.loads(command("status", "--json", "--dsn", dsn).stdout)["limits"]
    assert (limit["task_type"], limit["max_running"], limit["starts_per_second"]) == (
        "reports",
        3,
        2.0,
    )
    assert "Task type limits" in command("status", "--dsn", dsn).stdout
    cleared = command("limit", "reports", "--clear", "--json", "--dsn", dsn)
    assert json.loads(cleared.stdout)["message"] == "task type reports limits cleared"
    assert client.task_type_limits() == []


@pytest.mark.parametrize(
    "args",
    [
        ["limit", "reports"],
        ["limit", "reports", "--max-running", "0"],
        ["limit", "reports", "--starts-per-second", "nan"],
        ["limit", "reports", "--starts-per-second", "1e-10"],
        ["limit", "reports", "--clear", "--max-running", "3"],
        ["limit", "", "--max-running", "3"],
    ],
)
def test_bad_limits_on_the_command_line_are_a_usage_error(dsn, client, args):
    done = command(*args, "--dsn", dsn)
    assert done.returncode == 2, done.stdout
    assert done.stderr.startswith("omnispindle: ")
    assert client.task_type_limits() == []
