"""Claims that start from a claim cursor: the order they keep, and why they exist."""

from __future__ import annotations

import time
import uuid

import psycopg
import pytest

from omnispindle._db import queries as q
from omnispindle._db.pg_arrays import text_array
from omnispindle._db.pool import execute

from .test_fast_paths import claim, complete_and_claim

# A worker of one type walks that type's tasks alone, as does one whose other
# types are held back (here paused); one of several, the ready index.
HELD = "held"
WALKS = pytest.mark.parametrize(
    "task_types",
    [("job",), ("job", "spare"), ("job", HELD), ("job", HELD, "spare")],
    indirect=True,
)


@pytest.fixture
def task_types(request, client):
    """The worker's types, the held-back one paused."""
    if HELD in request.param:
        client.pause_task_type(HELD)
    return request.param


def step(conn, limit, task_types, after=(None, None)):
    """A worker's step that only claims, up to ``limit``, from the cursor ``after``."""
    return execute(
        conn,
        q.tasks.complete_and_claim(
            q.tasks.Results([], [], []),
            task_types=text_array(task_types),
            capabilities=text_array([]),
            limit=limit,
            worker_id=uuid.uuid4(),
            lease_seconds=30.0,
            after_priority=after[0],
            after_id=after[1],
        ),
    )


def claimed_ids(rows):
    return [r["id"] for r in rows if not r["dropped"]]


@WALKS
def test_a_claim_starts_past_its_cursor(client, conn, task_types):
    ids = client.submit_batch([{"task_type": "job"}] * 10)
    rows = step(conn, 3, task_types, after=(0, ids[4]))
    assert claimed_ids(rows) == ids[5:8]
    assert [r["priority"] for r in rows] == [0, 0, 0]


@WALKS
def test_a_cursor_past_the_largest_integer_is_walked_from(client, conn, task_types):
    """Task ids are bigint: the cursor of a queue that has lived long enough
    passes 2**31 - 1."""
    high = client.submit_task("job", priority=5)
    client.submit_batch([{"task_type": "job"}] * 2)
    rows = step(conn, 3, task_types, after=(0, 2**31 + 5))
    assert claimed_ids(rows) == [high]


@WALKS
def test_higher_priorities_than_the_cursor_come_first(client, conn, task_types):
    low = client.submit_batch([{"task_type": "job"}] * 5)
    high = client.submit_task("job", priority=5)
    rows = step(conn, 2, task_types, after=(0, low[1]))
    assert claimed_ids(rows) == [high, low[2]]


@WALKS
def test_a_claim_past_its_cursor_takes_lower_priorities_but_never_walks_back(
    client, conn, task_types
):
    behind = client.submit_batch([{"task_type": "job"}] * 2)
    lower = client.submit_task("job", priority=-3)
    rows = step(conn, 5, task_types, after=(0, behind[1]))
    assert claimed_ids(rows) == [lower]
    # What waits behind the cursor is the next claim from the head's.
    assert claimed_ids(step(conn, 5, task_types)) == behind


@WALKS
def test_a_cursor_skips_no_task_a_head_claim_would_take(client, conn, task_types):
    ids = client.submit_batch([{"task_type": "job", "priority": p} for p in (3, 0, 0, -2, 0, 3)])
    order = []
    after = (None, None)
    while True:
        rows = step(conn, 2, task_types, after=after)
        got = [r for r in rows if not r["dropped"]]
        if not got:
            break
        order += [r["id"] for r in got]
        lowest = min(r["priority"] for r in got)
        after = (lowest, max(r["id"] for r in got if r["priority"] == lowest))
    assert order == [ids[0], ids[5], ids[1], ids[2], ids[4], ids[3]]


def entries_read_by_claim(conn, task_types, after_priority, after_id):
    """Entries of the ready indexes a claim of 10 reads (then undone): each costs
    a heap visit. A worker of one type walks tasks_group_ready_idx."""
    read = (
        "SELECT pg_stat_get_xact_tuples_returned('omnispindle.tasks_ready_idx'::regclass)"
        " + pg_stat_get_xact_tuples_returned('omnispindle.tasks_group_ready_idx'::regclass)"
    )
    with conn.transaction(force_rollback=True):
        before = conn.execute(read).fetchone()[0]
        rows = conn.execute(
            "SELECT id FROM omnispindle.claim_tasks(%s, ARRAY['job'], 10, "
            "gen_random_uuid(), 30, %s, %s)",
            [list(task_types), after_priority, after_id],
        ).fetchall()
        assert len(rows) == 10
        return conn.execute(read).fetchone()[0] - before


@WALKS
def test_under_a_held_snapshot_a_cursor_claim_skips_the_claimed_entries(
    client, conn, dsn, task_types
):
    """Vacuum cannot remove the ready-index entries of tasks claimed after an
    old snapshot; a claim from the head visits each of them, one from the cursor does not."""
    client.submit_batch([{"task_type": "job"}] * 3000)
    with psycopg.connect(dsn) as holder:
        holder.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        holder.execute("SELECT count(*) FROM omnispindle.tasks").fetchone()
        last = None
        for _ in range(25):
            rows = claim(conn, 100)
            complete_and_claim(conn, rows, limit=0)
            last = max(r["id"] for r in rows)
        conn.execute("VACUUM omnispindle.tasks")
        from_head = entries_read_by_claim(conn, task_types, None, None)
        from_cursor = entries_read_by_claim(conn, task_types, 0, last)
        holder.rollback()
    assert from_head >= 2500 and from_cursor <= 20, (from_head, from_cursor)


def test_a_worker_follows_its_cursor_while_a_backlog_lasts(client, start_worker, record_statements):
    statements = record_statements()
    ids = client.submit_batch([{"task_type": "noop"}] * 300)
    start_worker({"noop": lambda task: {}}, concurrency=4)
    assert [t["state"] for t in client.wait_for_batch(ids, timeout=60)] == ["succeeded"] * 300
    cursors = [
        params["after_id"] for name, params in statements.runs if name == "complete_and_claim"
    ]
    followed = [c for c in cursors if c is not None]
    assert followed, "no claim started from a cursor"
    assert set(followed) <= set(ids)


def test_a_retry_behind_the_cursor_runs_while_a_backlog_lasts(client, start_worker):
    """Claims walk from the head now and then: a task that became ready
    behind the cursor waits no longer than that, not until the backlog is gone."""

    def job(task):
        if task["parameters"].get("fail_first") and task["attempt"] == 1:
            raise RuntimeError("first attempt fails")
        time.sleep(0.02)  # the work: keeps a backlog for about three seconds
        return {}

    first = client.submit_task("job", {"fail_first": True}, retry_backoff=0)
    ids = client.submit_batch([{"task_type": "job"}] * 600)
    start_worker({"job": job}, concurrency=4)
    retried = client.wait_for_task(first, timeout=60)
    assert retried["state"] == "succeeded" and retried["attempts"] == 2
    backlog = client.wait_for_batch(ids, timeout=60)
    finished_after = sum(t["finished_at"] > retried["finished_at"] for t in backlog)
    assert finished_after > 200, finished_after
