"""A worker's step hands the children its completions make ready straight to that
worker, in the update that readies them, as far as its claim would have taken
them first; everything else goes through the claim, as before."""

from __future__ import annotations

import uuid

import pytest

from omnispindle._core.batches import entry
from omnispindle._db import queries as q
from omnispindle._db.pg_arrays import text_array
from omnispindle._db.pool import execute

from .test_fast_paths import claim, plans_of_nested_statements
from .test_hostile_input import BIG_ROW

TASK_UPDATES = "SELECT pg_stat_get_xact_tuples_updated('omnispindle.tasks'::regclass)"
STATES = "SELECT id, state::text FROM omnispindle.tasks ORDER BY id"
# As BIG_ROW, waiting for one parent.
BIG_CHILD = (
    "INSERT INTO omnispindle.tasks (task_type, parameters, state, pending_dependencies) "
    "SELECT 'big', jsonb_build_object('blob', string_agg(md5(random()::text), '')), 'blocked', 1 "
    "FROM generate_series(1, 1200000) RETURNING id"
)


def step(
    conn, rows, limit, task_types=("job",), worker_id=None, capabilities=(), after=(None, None)
):
    """A worker's step: store ``rows``' results and claim up to ``limit``, from the
    claim cursor ``after`` (priority, id)."""
    return [
        row
        for row in execute(
            conn,
            q.tasks.complete_and_claim(
                q.tasks.Results(
                    [r["id"] for r in rows],
                    [r["lease_token"] for r in rows],
                    ['{"ok": true}'] * len(rows),
                ),
                task_types=text_array(list(task_types)),
                capabilities=text_array(list(capabilities)),
                limit=limit,
                worker_id=worker_id or uuid.uuid4(),
                lease_seconds=30.0,
                after_priority=after[0],
                after_id=after[1],
            ),
        )
        if not row["dropped"]
    ]


def states(conn) -> list[str]:
    return [state for _id, state in conn.execute(STATES).fetchall()]


def test_a_chains_next_link_is_written_once_as_it_starts(client, conn):
    """Before, the child was updated twice in the step: blocked -> pending by the
    countdown, then pending -> running by the claim."""
    parent, child = client.submit_batch(
        [{"task_type": "job"}, {"task_type": "job", "dependencies": [entry(0)]}]
    )
    running = claim(conn)
    with conn.transaction():
        before = conn.execute(TASK_UPDATES).fetchone()[0]
        claimed = step(conn, running, limit=1)
        updates = conn.execute(TASK_UPDATES).fetchone()[0] - before
    assert [r["id"] for r in claimed] == [child]
    assert claimed[0]["dependency_results"] == {str(parent): {"ok": True}}
    assert updates == 2  # the parent's completion and the child's start
    row = conn.execute(
        "SELECT state::text, attempts, worker_id IS NOT NULL, lease_token::text, "
        "started_at IS NOT NULL, lease_expires_at > now() FROM omnispindle.tasks WHERE id = %s",
        [child],
    ).fetchone()
    assert row == ("running", 1, True, claimed[0]["lease_token"], True, True)


def test_the_worker_handed_a_child_is_the_one_that_completed_its_parent(client, conn):
    client.submit_batch([{"task_type": "job"}, {"task_type": "job", "dependencies": [entry(0)]}])
    worker = uuid.uuid4()
    [child] = step(conn, claim(conn), limit=1, worker_id=worker)
    assert conn.execute(
        "SELECT worker_id FROM omnispindle.tasks WHERE id = %s", [child["id"]]
    ).fetchone() == (worker,)


def test_a_handed_child_stores_its_result_and_hands_on_the_next(client, conn):
    ids = client.submit_batch(
        [{"task_type": "job", "dependencies": [entry(i - 1)] if i else []} for i in range(4)]
    )
    running = claim(conn)
    for expected in ids[1:]:
        running = step(conn, running, limit=1)
        assert [r["id"] for r in running] == [expected]
    assert step(conn, running, limit=1) == []
    assert states(conn) == ["succeeded"] * 4


def test_a_ready_task_ahead_in_priority_is_claimed_instead(client, conn):
    """Strict priority holds: the child waits behind a ready task of higher priority."""
    client.submit_batch([{"task_type": "job"}, {"task_type": "job", "dependencies": [entry(0)]}])
    running = claim(conn)
    urgent = client.submit_task("job", priority=5)
    assert [r["id"] for r in step(conn, running, limit=1)] == [urgent]
    assert states(conn) == ["succeeded", "pending", "running"]


def test_an_older_ready_task_of_the_same_priority_is_claimed_instead(client, conn):
    older = client.submit_task("job")
    client.submit_batch(
        [{"task_type": "job", "priority": 1}, {"task_type": "job", "dependencies": [entry(0)]}]
    )
    running = claim(conn)  # the parent, first by its priority
    assert [r["id"] for r in step(conn, running, limit=1)] == [older]
    assert states(conn) == ["running", "succeeded", "pending"]


def test_children_past_the_free_slots_are_left_pending_and_announced(client, conn, ready_notices):
    client.submit_batch(
        [{"task_type": "job"}] + [{"task_type": "job", "dependencies": [entry(0)]}] * 3
    )
    running = claim(conn)
    claimed = []
    assert ready_notices(lambda: claimed.extend(step(conn, running, limit=2))) == [""]
    assert len(claimed) == 2
    assert states(conn) == ["succeeded", "running", "running", "pending"]


def test_the_claim_fills_the_slots_a_hand_over_leaves(client, conn):
    _parent, child = client.submit_batch(
        [{"task_type": "job"}, {"task_type": "job", "dependencies": [entry(0)]}]
    )
    running = claim(conn)
    later = client.submit_task("job")
    assert sorted(r["id"] for r in step(conn, running, limit=3)) == [child, later]


def test_paused_and_limited_types_go_through_the_claim(client, conn):
    """Their children are left to the claim, which holds back the paused type and
    starts no more of the limited one than its limit."""
    client.submit_batch(
        [{"task_type": "job"}]
        + [{"task_type": kind, "dependencies": [entry(0)]} for kind in ("paused", "one", "one")]
    )
    client.pause_task_type("paused")
    client.set_task_type_limit("one", max_running=1)
    claimed = step(conn, claim(conn), limit=5, task_types=("job", "paused", "one"))
    assert [r["task_type"] for r in claimed] == ["one"]
    assert states(conn) == ["succeeded", "pending", "running", "pending"]


def test_a_worker_with_limited_types_leaves_its_children_to_the_claim(client, conn):
    """A limited type's pass comes before the walks in the claim: a ready task of it
    takes the slot first, and the child of higher priority waits."""
    client.set_task_type_limit("one", max_running=1)
    limited = client.submit_task("one")
    client.submit_batch(
        [{"task_type": "job"}, {"task_type": "job", "priority": 5, "dependencies": [entry(0)]}]
    )
    claimed = step(conn, claim(conn), limit=1, task_types=("job", "one"))
    assert [r["id"] for r in claimed] == [limited]
    assert states(conn) == ["running", "succeeded", "pending"]


def test_children_come_in_priority_order_whatever_they_need(client, conn):
    """A child that needs a capability this worker has is handed over like any
    other: its lower sibling does not take the slot ahead of it."""
    _parent, urgent, _later = client.submit_batch(
        [
            {"task_type": "job"},
            {
                "task_type": "job",
                "dependencies": [entry(0)],
                "priority": 10,
                "required_capabilities": ["gpu"],
            },
            {"task_type": "job", "dependencies": [entry(0)]},
        ]
    )
    claimed = step(conn, claim(conn), limit=1, capabilities=("job", "gpu"))
    assert [r["id"] for r in claimed] == [urgent]
    assert states(conn) == ["succeeded", "running", "pending"]


def test_a_ready_task_behind_the_cursor_is_left_as_the_claim_leaves_it(client, conn):
    """From its cursor, the claim reaches a task behind it only on its next walk
    from the head; the hand-over follows the same walks."""
    _parent, child = client.submit_batch(
        [{"task_type": "job"}, {"task_type": "job", "dependencies": [entry(0)]}]
    )
    running = claim(conn)
    behind = client.submit_task("job", priority=5)
    with conn.transaction():
        before = conn.execute(TASK_UPDATES).fetchone()[0]
        claimed = step(conn, running, limit=1, after=(5, behind))
        updates = conn.execute(TASK_UPDATES).fetchone()[0] - before
    assert [r["id"] for r in claimed] == [child]
    assert updates == 2  # handed over: a check from the head would have left it to the claim
    assert states(conn) == ["succeeded", "running", "pending"]


def test_a_ready_task_ahead_of_the_child_from_the_cursor_is_claimed_instead(client, conn):
    client.submit_batch([{"task_type": "job"}, {"task_type": "job", "dependencies": [entry(0)]}])
    running = claim(conn)
    ahead = client.submit_task("job", priority=3)
    assert [r["id"] for r in step(conn, running, limit=1, after=(5, ahead))] == [ahead]
    assert states(conn) == ["succeeded", "pending", "running"]


def test_a_child_needing_a_capability_the_worker_lacks_is_left_pending(client, conn):
    client.submit_batch(
        [
            {"task_type": "job"},
            {"task_type": "job", "dependencies": [entry(0)], "required_capabilities": ["gpu"]},
        ]
    )
    assert step(conn, claim(conn), limit=1) == []
    assert states(conn) == ["succeeded", "pending"]


def test_a_child_not_due_yet_is_not_handed_over(client, conn):
    client.submit_batch(
        [{"task_type": "job"}, {"task_type": "job", "dependencies": [entry(0)], "delay": 3600}]
    )
    assert step(conn, claim(conn), limit=1) == []
    assert states(conn) == ["succeeded", "pending"]


def test_handed_children_count_against_the_claims_budget_of_parameters(client, conn):
    """Two children of about 38 MB fill the 64 MiB budget: a third ready task, which
    the claim alone would also have left, waits for the next step."""
    parent = client.submit_task("big")
    for _ in range(2):
        child = conn.execute(BIG_CHILD).fetchone()[0]
        conn.execute(
            "INSERT INTO omnispindle.task_dependencies (task_id, depends_on) VALUES (%s, %s)",
            [child, parent],
        )
    conn.execute(BIG_ROW)
    running = claim(conn, task_type="big")
    assert len(step(conn, running, limit=5, task_types=("big",))) == 2
    assert states(conn) == ["succeeded", "running", "running", "pending"]


CLAIM_CALLS = "SELECT pg_stat_get_xact_function_calls('omnispindle.claim_tasks'::regproc)"


def claim_calls_in(conn, action) -> int:
    """How many times ``action`` called claim_tasks (counted in its transaction)."""
    with conn.transaction():
        conn.execute("SET LOCAL track_functions = 'pl'")
        action()
        return conn.execute(CLAIM_CALLS).fetchone()[0] or 0


def test_a_chains_step_with_nothing_else_ready_does_not_claim(client, conn):
    """The issue's "no second claim on the chain's path": with the next link handed
    over and no other task ready, a walk of the ready index would find nothing."""
    _parent, child = client.submit_batch(
        [{"task_type": "job"}, {"task_type": "job", "dependencies": [entry(0)]}]
    )
    running = claim(conn)
    claimed = []
    assert claim_calls_in(conn, lambda: claimed.extend(step(conn, running, limit=8))) == 0
    assert [r["id"] for r in claimed] == [child]


def test_a_step_that_leaves_only_children_it_cannot_take_pending_does_not_claim(
    client, conn, ready_notices
):
    """A child that needs a capability this worker lacks is left pending and
    announced to the others; the claim could not take it either, so the step
    does not walk the ready index for it."""
    _parent, child, _other = client.submit_batch(
        [
            {"task_type": "job"},
            {"task_type": "job", "dependencies": [entry(0)]},
            {"task_type": "job", "dependencies": [entry(0)], "required_capabilities": ["gpu"]},
        ]
    )
    running = claim(conn)
    claimed: list = []
    calls: list[int] = []

    def stepping() -> None:
        calls.append(claim_calls_in(conn, lambda: claimed.extend(step(conn, running, limit=8))))

    assert ready_notices(stepping) == [""]
    assert calls == [0]
    assert [r["id"] for r in claimed] == [child]
    assert states(conn) == ["succeeded", "running", "pending"]


def test_a_step_with_no_types_or_capabilities_stores_its_results(client, conn):
    """As a claim with NULL arrays takes nothing, the step hands nothing over:
    its results are stored, and the child waits for a claim."""
    client.submit_batch([{"task_type": "job"}, {"task_type": "job", "dependencies": [entry(0)]}])
    running = claim(conn)
    rows = conn.execute(
        "SELECT id FROM omnispindle.complete_and_claim(%s, %s, %s, NULL, NULL, 4, "
        "gen_random_uuid(), 30, NULL, NULL) WHERE NOT dropped",
        [[r["id"] for r in running], [r["lease_token"] for r in running], ["{}"]],
    ).fetchall()
    assert rows == []
    assert states(conn) == ["succeeded", "pending"]


def test_a_child_an_idle_narrower_worker_can_run_is_left_to_it_however_long_it_waited(client, conn):
    """The claim asks about the narrower worker with the time the child became
    ready (now); asked with the child's own, older run_after, the hand-over gave
    it to the broader worker."""
    conn.execute(
        "INSERT INTO omnispindle.workers (name, host, pid, capabilities, task_types, "
        "concurrency, version) VALUES ('narrow', 'h', 1, '{gpu}', '{job}', 1, 'x')"
    )
    _parent, child = client.submit_batch(
        [
            {"task_type": "job"},
            {"task_type": "job", "dependencies": [entry(0)], "required_capabilities": ["gpu"]},
        ]
    )
    conn.execute(
        "UPDATE omnispindle.tasks SET run_after = now() - interval '1 minute' WHERE id = %s",
        [child],
    )
    assert step(conn, claim(conn), limit=1, capabilities=("gpu", "x")) == []
    assert states(conn) == ["succeeded", "pending"]


def test_a_child_a_cancel_readies_in_the_same_step_keeps_its_priority(client, conn):
    """One parent succeeds, readying a child of priority 0; the other ends cancelled
    (a cancel was requested), and the cascade readies a grandchild of priority 10
    that allows failed dependencies. The slot is the grandchild's, as the claim
    alone would give it: the countdown that readied the first child used to hand
    it over before the cascade ran."""
    _first, second, _child, _doomed, urgent = client.submit_batch(
        [
            {"task_type": "job"},
            {"task_type": "job"},
            {"task_type": "job", "dependencies": [entry(0)]},
            {"task_type": "job", "dependencies": [entry(1)]},
            {
                "task_type": "job",
                "dependencies": [entry(3)],
                "priority": 10,
                "allow_failed_dependencies": True,
            },
        ]
    )
    running = sorted(claim(conn, limit=2), key=lambda row: row["id"])
    conn.execute("UPDATE omnispindle.tasks SET cancel_requested_at = now() WHERE id = %s", [second])
    assert [r["id"] for r in step(conn, running, limit=1)] == [urgent]
    assert states(conn) == ["succeeded", "cancelled", "pending", "cancelled", "running"]


# A worker of one type walks that type's tasks alone; one of several, the ready index.
@pytest.mark.parametrize("task_types", [("job",), ("job", "spare")])
def test_the_look_for_a_ready_task_ahead_walks_the_index_in_a_plan_made_on_a_big_table(
    client, conn, task_types
):
    """With thousands of ready tasks analysed, a generic plan of the look read every
    one of them through a bitmap and sorted them, where the claim stops at the
    first: the look has the claim's settings."""
    conn.execute(
        "INSERT INTO omnispindle.tasks (task_type, priority) "
        "SELECT CASE WHEN g % 2 = 0 THEN 'job' ELSE 'other' END, g % 3 "
        "FROM generate_series(1, 10000) g"
    )
    client.submit_batch(
        [
            {"task_type": "job", "priority": 5},
            {"task_type": "job", "priority": 5, "dependencies": [entry(0)]},
        ]
    )
    conn.execute("ANALYZE omnispindle.tasks")
    running = claim(conn)
    plans = plans_of_nested_statements(conn)
    assert len(step(conn, running, limit=1, task_types=task_types)) == 1
    assert plans, "no plan was recorded"
    assert not [plan for plan in plans if "Bitmap Heap Scan on tasks" in plan], plans
