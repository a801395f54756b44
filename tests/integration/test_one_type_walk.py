"""A worker of one task type walks that type's ready tasks alone: a backlog of
another type ahead of them costs its claims and hand-overs nothing."""

from __future__ import annotations

import uuid

from omnispindle._core.batches import entry
from omnispindle._db import queries as q
from omnispindle._db.pool import execute

from .test_fast_paths import claim, complete_and_claim

BACKLOG = 3000

# Index entries the ready indexes returned so far in this transaction.
ENTRIES_READ = (
    "SELECT pg_stat_get_xact_tuples_returned('omnispindle.tasks_ready_idx'::regclass)"
    " + pg_stat_get_xact_tuples_returned('omnispindle.tasks_group_ready_idx'::regclass)"
)


def read_by(conn, step):
    """What ``step(conn)`` returns (then undone), and the ready-index entries it read."""
    with conn.transaction(force_rollback=True):
        before = conn.execute(ENTRIES_READ).fetchone()[0]
        got = step(conn)
        return got, conn.execute(ENTRIES_READ).fetchone()[0] - before


def claim_of(task_types, limit=3):
    """A claim of ``limit`` by a worker of ``task_types``: the ids it takes."""

    def step(conn):
        rows = execute(
            conn,
            q.tasks.claim_tasks(
                task_types=task_types,
                capabilities=[],
                limit=limit,
                worker_id=uuid.uuid4(),
                lease_seconds=30,
            ),
        )
        return {r["id"] for r in rows}

    return step


def test_a_worker_of_one_type_claims_past_another_types_backlog_without_reading_it(client, conn):
    client.submit_batch([{"task_type": "flood", "priority": 5}] * BACKLOG)
    mine = client.submit_batch([{"task_type": "job", "priority": p} for p in (0, 2, 0, 1)])
    claimed, read = read_by(conn, claim_of(["job"]))
    assert claimed == {mine[1], mine[3], mine[0]}
    assert read <= 10, read
    # A worker of several types walks the ready index, the backlog too.
    claimed, read = read_by(conn, claim_of(["job", "other"]))
    assert claimed == {mine[1], mine[3], mine[0]}
    assert read >= BACKLOG, read


def test_a_worker_of_one_type_hands_over_past_another_types_backlog_without_reading_it(
    client, conn
):
    parent, child = client.submit_batch(
        [{"task_type": "job"}, {"task_type": "job", "dependencies": [entry(0)]}]
    )
    client.submit_batch([{"task_type": "flood", "priority": 5}] * BACKLOG)
    [running] = claim(conn)
    assert running["id"] == parent

    def step(conn):
        rows = complete_and_claim(conn, [running], limit=4)
        return [r["id"] for r in rows if not r["dropped"]]

    handed, read = read_by(conn, step)
    assert handed == [child]
    assert read <= 10, read


def test_a_type_whose_tasks_have_group_keys_is_claimed_in_priority_order_across_them(client, conn):
    ids = client.submit_batch(
        [
            {"task_type": "job", "group_key": "a", "priority": 1},
            {"task_type": "job", "priority": 5},
            {"task_type": "job", "group_key": "b", "priority": 3},
            {"task_type": "job", "priority": 0},
        ]
    )
    rows = execute(
        conn,
        q.tasks.claim_tasks(
            task_types=["job"], capabilities=[], limit=3, worker_id=uuid.uuid4(), lease_seconds=30
        ),
    )
    assert {r["id"] for r in rows} == {ids[1], ids[2], ids[0]}


def test_a_paused_type_is_not_claimed_by_a_worker_of_that_type_alone(client, conn):
    ids = client.submit_batch([{"task_type": "job"}] * 2)
    client.pause_task_type("job")
    assert claim(conn, 5) == []
    client.resume_task_type("job")
    assert [r["id"] for r in claim(conn, 5)] == ids


def test_a_one_type_array_with_other_bounds_claims_and_looks_ahead_as_any(client, conn):
    """Its one element is not at [1]: the walks take the ready index, and find the tasks."""
    ids = client.submit_batch([{"task_type": "job"}] * 2)
    for types in ("[0:0]={job}", "{{job}}"):
        ahead = conn.execute(
            "SELECT id FROM omnispindle.first_ready_task(%s::text[], '{}', gen_random_uuid(), "
            "'{-1000,1000,0,0,0,0,0,0,0}')",
            [types],
        ).fetchall()
        assert ahead == [(ids[0],)], types
        with conn.transaction(force_rollback=True):
            claimed = conn.execute(
                "SELECT id FROM omnispindle.claim_tasks("
                "%s::text[], '{}', 5, gen_random_uuid(), 30)",
                [types],
            ).fetchall()
        assert sorted(claimed) == [(ids[0],), (ids[1],)], types
