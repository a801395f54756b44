"""A worker some of whose task types are held back (limited, with a strategy, or
paused) walks its other types each apart: the held-back types' backlog, which
the walks must leave, costs its claims nothing."""

from __future__ import annotations

import uuid

from omnispindle._core.batches import entry
from omnispindle._db import queries as q
from omnispindle._db.pg_arrays import text_array
from omnispindle._db.pool import execute

from .test_fast_paths import claim
from .test_one_type_walk import BACKLOG, claim_of, read_by


def test_a_worker_claims_past_its_limited_types_backlog_without_reading_it(client, conn):
    client.set_task_type_limit("held", max_running=1)
    held = client.submit_batch([{"task_type": "held", "priority": 5}] * BACKLOG)
    mine = client.submit_batch([{"task_type": "job", "priority": p} for p in (0, 2, 0, 1)])
    claimed, read = read_by(conn, claim_of(["held", "job"]))
    # The limited type's pass takes what its limit allows, the walk the rest.
    assert claimed == {held[0], mine[1], mine[3]}
    assert read <= 10, read


def test_two_walked_types_are_claimed_in_one_priority_order_past_a_held_back_backlog(client, conn):
    client.set_task_type_limit("held", max_running=1)
    held = client.submit_batch([{"task_type": "held", "priority": 5}] * BACKLOG)
    ids = client.submit_batch(
        [
            {"task_type": "job", "priority": 0},
            {"task_type": "other", "priority": 3},
            {"task_type": "job", "priority": 3},
            {"task_type": "other", "priority": 0},
        ]
    )
    claimed, read = read_by(conn, claim_of(["job", "held", "other"]))
    # What the limit allows of the held type, then the best of the others.
    assert claimed == {held[0], ids[1], ids[2]}
    assert read <= 20, read


def test_the_walks_by_type_keep_the_order_of_the_ready_index(client, conn):
    client.pause_task_type("held")
    client.submit_batch([{"task_type": "held", "priority": 5}] * 10)
    ids = client.submit_batch(
        [{"task_type": kind, "priority": 0} for kind in ("job", "other") * 3]
        + [{"task_type": "other", "priority": 1}, {"task_type": "job", "priority": -1}]
    )
    claims = []
    for _ in range(3):
        with conn.transaction():
            claims.append(claim_of(["job", "held", "other"])(conn))
    # Priority first, then the order of submission, across both walked types.
    assert claims == [{ids[6], ids[0], ids[1]}, set(ids[2:5]), {ids[5], ids[7]}]


def test_a_worker_claims_past_a_paused_types_backlog_without_reading_it(client, conn):
    client.pause_task_type("held")
    held = client.submit_batch([{"task_type": "held", "priority": 5}] * BACKLOG)
    mine = client.submit_batch([{"task_type": "job"}] * 2)
    claimed, read = read_by(conn, claim_of(["held", "job"]))
    assert claimed == set(mine)
    assert read <= 10, read
    client.resume_task_type("held")
    claimed, _ = read_by(conn, claim_of(["held", "job"]))
    assert claimed == {held[0], held[1], held[2]}


def test_a_walked_type_with_group_keys_walks_the_ready_index_in_the_same_order(client, conn):
    client.set_task_type_limit("held", max_running=1)
    held = client.submit_batch([{"task_type": "held", "priority": 5}] * 50)
    ids = client.submit_batch(
        [
            {"task_type": "job", "group_key": "a", "priority": 1},
            {"task_type": "other", "priority": 2},
            {"task_type": "job", "priority": 0},
        ]
    )
    claimed, read = read_by(conn, claim_of(["held", "job", "other"]))
    assert claimed == {held[0], ids[1], ids[0]}
    # The grouped type sends the walk back to the ready index, backlog and all.
    assert read >= 50, read


def test_the_tasks_a_walk_by_type_locked_and_left_are_claimed_by_the_next_claim(client, conn):
    client.pause_task_type("held")
    ids = client.submit_batch([{"task_type": kind} for kind in ("job", "other") * 3])
    with conn.transaction():
        first = claim_of(["job", "held", "other"])(conn)
    with conn.transaction():
        second = claim_of(["job", "held", "other"])(conn)
    # Each type's walk locked 3, the claim took 3 in all; the rest waited for the next.
    assert first == set(ids[:3]) and second == set(ids[3:])


def test_a_worker_hands_over_past_a_paused_types_backlog_without_reading_it(client, conn):
    parent, child = client.submit_batch(
        [{"task_type": "job"}, {"task_type": "job", "dependencies": [entry(0)]}]
    )
    client.pause_task_type("held")
    client.submit_batch([{"task_type": "held", "priority": 5}] * BACKLOG)
    [running] = claim(conn)
    assert running["id"] == parent

    def step(conn):
        rows = execute(
            conn,
            q.tasks.complete_and_claim(
                q.tasks.Results([running["id"]], [running["lease_token"]], ['{"ok": true}']),
                task_types=text_array(["held", "job"]),
                capabilities=text_array([]),
                limit=4,
                worker_id=uuid.uuid4(),
                lease_seconds=30.0,
                after_priority=None,
                after_id=None,
            ),
        )
        return [r["id"] for r in rows if not r["dropped"]]

    handed, read = read_by(conn, step)
    assert handed == [child]
    assert read <= 10, read
