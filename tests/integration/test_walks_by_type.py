"""A worker some of whose task types are held back (limited, with a strategy, or
paused) walks each type left to walk in its own range of the index, and merges
them in priority order: the held-back types' backlog, which the walk must
leave, costs its claims nothing. A type with group keys sends the walk back to
the ready index, as does a worker with nothing held back."""

from __future__ import annotations

import random
import threading
import uuid
from datetime import datetime, timedelta, timezone

import psycopg
import pytest

from omnispindle._core.batches import entry
from omnispindle._db import queries as q
from omnispindle._db.pg_arrays import text_array
from omnispindle._db.pool import execute

from .test_fast_paths import claim
from .test_one_type_walk import BACKLOG, claim_of, read_by
from .test_type_limits import poll


def test_a_worker_claims_past_its_limited_types_backlog_without_reading_it(client, conn):
    client.set_task_type_limit("held", max_running=1)
    held = client.submit_batch([{"task_type": "held", "priority": 5}] * BACKLOG)
    mine = client.submit_batch([{"task_type": "job", "priority": p} for p in (0, 2, 0, 1)])
    claimed, read = read_by(conn, claim_of(["held", "job"]))
    # The limited type's pass takes what its limit allows, the walk the rest.
    assert claimed == {held[0], mine[1], mine[3]}
    assert read <= 10, read


def test_a_worker_of_several_types_left_to_walk_claims_past_a_limited_backlog_unread(client, conn):
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


def test_a_worker_of_several_types_with_no_backlog_set_apart_walks_the_ready_index(client, conn):
    """Without a backlog to pass, the ready index gives the types in one order
    for less than a walk of each."""
    client.set_task_type_limit("held", max_running=1)
    client.submit_batch([{"task_type": "flood", "priority": 5}] * 50)
    ids = client.submit_batch([{"task_type": kind} for kind in ("job", "other", "job")])
    claimed, read = read_by(conn, claim_of(["job", "held", "other"]))
    assert claimed == set(ids)
    assert read >= 50, read


def test_several_types_left_to_walk_are_claimed_in_one_priority_order(client, conn):
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
    # Priority first, then the order of submission, across both types.
    assert claims == [{ids[6], ids[0], ids[1]}, set(ids[2:5]), {ids[5], ids[7]}]


@pytest.mark.parametrize("task_types", [["job", "held"], ["job", "held", "other"]])
def test_a_claim_made_while_another_holds_its_rows_takes_the_next_ones(
    client, conn, dsn, task_types
):
    client.pause_task_type("held")
    client.submit_batch([{"task_type": "held", "priority": 5}] * 10)
    ids = client.submit_batch([{"task_type": kind} for kind in ("job", "other") * 4])
    walked = [i for i, kind in zip(ids, ("job", "other") * 4) if kind in task_types]
    first, second = racing_claims(conn, dsn, task_types)
    # Neither waits for the other, nor comes back empty while tasks are ready.
    assert first == set(walked[:3]) and second == set(walked[3:6])


@pytest.mark.parametrize("seed", range(12))
def test_several_types_walked_apart_claim_what_the_ready_index_walk_claims(client, conn, seed):
    """The same tasks as the walk of the ready index, which a type with group keys
    among the worker's types brings back (its one task comes last of all)."""
    rng = random.Random(seed)
    later = datetime.now(timezone.utc) + timedelta(hours=1)
    client.set_task_type_limit("held", max_running=2)
    if rng.random() < 0.3:
        client.pause_task_type("third")
    client.submit_batch(
        [
            {
                "task_type": rng.choice(["job", "other", "third", "held", "flood"]),
                "priority": rng.randint(-2, 2),
                "run_at": later if rng.random() < 0.1 else None,
                "required_capabilities": ["gpu"] if rng.random() < 0.15 else [],
            }
            for _ in range(rng.randint(5, 60))
        ]
    )
    [oracle] = client.submit_batch([{"task_type": "grouped", "group_key": "g", "priority": -1000}])
    types = ["job", "other", "third", "held"]
    capabilities = rng.choice([[], ["gpu"]])
    limit = rng.randint(1, 12)
    cursor = rng.choice([(None, None), (rng.randint(-2, 2), rng.randint(0, 40))])

    def claimed(task_types):
        with conn.transaction(force_rollback=True):
            return {
                r[0]
                for r in conn.execute(
                    "SELECT id FROM omnispindle.claim_tasks(%s, %s, %s, gen_random_uuid(), 30,"
                    " %s, %s)",
                    [task_types, capabilities, limit, *cursor],
                )
            }

    assert claimed(types) == claimed([*types, "grouped"]) - {oracle}


def test_a_claim_whose_best_rows_another_holds_takes_the_other_types_next(client, conn, dsn):
    """The best tasks, all of one type, give that type the whole share of the
    second claim; its walk finds them held, and the other type fills the room."""
    client.pause_task_type("held")
    client.submit_batch([{"task_type": "held", "priority": 9}] * 10)
    first_type = client.submit_batch([{"task_type": "job", "priority": 5}] * 3)
    second_type = client.submit_batch([{"task_type": "other"}] * 3)
    first, second = racing_claims(conn, dsn, ["job", "other", "held"])
    assert first == set(first_type) and second == set(second_type)


def test_a_claim_racing_another_takes_the_best_tasks_not_held_of_any_type(client, conn, dsn):
    """Not the next tasks of the type whose best another claim holds, when
    better ones of another type are free."""
    client.pause_task_type("held")
    client.submit_batch([{"task_type": "held", "priority": 9}] * 10)
    best = client.submit_batch([{"task_type": "job", "priority": 9}] * 4)
    client.submit_batch([{"task_type": "job", "priority": -1000}] * 4)
    next_best = client.submit_batch([{"task_type": "other", "priority": 8}] * 4)
    first, second = racing_claims(conn, dsn, ["job", "other", "held"], limit=4)
    assert first == set(best) and second == set(next_best)


def test_a_type_resumed_during_a_claim_waits_for_the_next_claim(client, conn, dsn):
    """Set apart for being paused when the claim started, it gets no pass of
    its own: its tasks would come before better ones of the other types."""
    client.set_task_type_limit("slow", max_running=5)
    client.pause_task_type("held")
    [slow] = client.submit_batch([{"task_type": "slow", "required_capabilities": ["x"]}])
    client.submit_batch([{"task_type": "held"}] * 2)
    best = client.submit_batch([{"task_type": "job", "priority": 9}] * 2)
    # The limited type's pass asks this of its task: it waits, mid-claim,
    # for the lock this test holds.
    conn.execute(
        "CREATE OR REPLACE FUNCTION omnispindle.left_to_a_narrower_worker("
        "p_task_type text, p_required text[], p_ready_since timestamptz,"
        " p_narrower jsonb) RETURNS boolean LANGUAGE plpgsql AS "
        "$$ BEGIN PERFORM pg_advisory_lock_shared(7); PERFORM pg_advisory_unlock_shared(7);"
        " RETURN false; END $$"
    )
    claimed: list[set[int]] = []
    with psycopg.connect(dsn, autocommit=True) as claimer:
        thread = threading.Thread(
            target=lambda: claimed.append(
                {
                    r[0]
                    for r in claimer.execute(
                        "SELECT id FROM omnispindle.claim_tasks("
                        "'{slow,held,job}', '{x}', 3, gen_random_uuid(), 30)"
                    )
                }
            )
        )
        conn.execute("SELECT pg_advisory_lock(7)")
        try:
            thread.start()
            poll(lambda: waiting_for_the_lock(conn))
            client.resume_task_type("held")
        finally:
            conn.execute("SELECT pg_advisory_unlock(7)")
            thread.join(timeout=30)
    assert claimed == [{slow, *best}]


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


@pytest.mark.parametrize(
    "child_type, task_types",
    [("job", ["held", "job"]), ("other", ["job", "other", "held"])],
    ids=["one-type-left", "several-types-left"],
)
def test_a_worker_hands_over_past_a_paused_types_backlog_without_reading_it(
    client, conn, child_type, task_types
):
    parent, child = client.submit_batch(
        [{"task_type": "job"}, {"task_type": child_type, "dependencies": [entry(0)]}]
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
                task_types=text_array(task_types),
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


def racing_claims(conn, dsn, task_types, limit=3):
    """The ids two claims by workers of ``task_types`` take, the second made on
    another connection while the first, undone afterwards, holds its rows."""
    with conn.transaction(force_rollback=True), psycopg.connect(dsn, autocommit=True) as other:
        return claim_of(task_types, limit)(conn), claim_of(task_types, limit)(other)


def waiting_for_the_lock(conn) -> bool:
    """Whether a session of this test's database waits for advisory lock 7."""
    return conn.execute(
        "SELECT EXISTS (SELECT FROM pg_locks l JOIN pg_database d ON d.oid = l.database"
        " WHERE l.locktype = 'advisory' AND l.objid = 7 AND NOT l.granted"
        " AND d.datname = current_database())"
    ).fetchone()[0]
