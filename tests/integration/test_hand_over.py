"""A worker's step claims the tasks that were ready, then hands the children its
completions make ready straight to that worker, in the update that readies them,
into the slots its claim left; what only a claim may start waits for one."""

from __future__ import annotations

import threading
import uuid

import psycopg

from omnispindle._core.batches import entry
from omnispindle._db import queries as q
from omnispindle._db.pg_arrays import text_array
from omnispindle._db.pool import execute

from ..acceptance.workers import poll
from .test_fast_paths import claim
from .test_hostile_input import BIG_ROW

TASK_UPDATES = "SELECT pg_stat_get_xact_tuples_updated('omnispindle.tasks'::regclass)"
STATES = "SELECT id, state::text FROM omnispindle.tasks ORDER BY id"
WAITING_FOR_A_LOCK = (
    "SELECT count(*) FROM pg_stat_activity "
    "WHERE datname = current_database() AND wait_event_type = 'Lock'"
)
# As BIG_ROW, waiting for one parent.
BIG_CHILD = (
    "INSERT INTO omnispindle.tasks (task_type, parameters, state, pending_dependencies) "
    "SELECT 'big', jsonb_build_object('blob', string_agg(md5(random()::text), '')), 'blocked', 1 "
    "FROM generate_series(1, 1200000) RETURNING id"
)


def step(conn, rows, limit, task_types=("job",), worker_id=None):
    """A worker's step: store ``rows``' results and claim up to ``limit``."""
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
                capabilities=text_array([]),
                limit=limit,
                worker_id=worker_id or uuid.uuid4(),
                lease_seconds=30.0,
                after_priority=None,
                after_id=None,
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


def test_the_hand_over_fills_the_slots_the_claim_leaves(client, conn):
    _parent, child = client.submit_batch(
        [{"task_type": "job"}, {"task_type": "job", "dependencies": [entry(0)]}]
    )
    running = claim(conn)
    later = client.submit_task("job")
    assert [r["id"] for r in step(conn, running, limit=3)] == [later, child]


def test_paused_and_limited_types_wait_for_a_claim(client, conn):
    """Their children are left pending for the next claim, which holds back the
    paused type and starts no more of the limited one than its limit."""
    client.submit_batch(
        [{"task_type": "job"}]
        + [{"task_type": kind, "dependencies": [entry(0)]} for kind in ("paused", "one", "one")]
    )
    client.pause_task_type("paused")
    client.set_task_type_limit("one", max_running=1)
    types = ("job", "paused", "one")
    assert step(conn, claim(conn), limit=5, task_types=types) == []
    assert [r["task_type"] for r in step(conn, [], limit=5, task_types=types)] == ["one"]
    assert states(conn) == ["succeeded", "pending", "running", "pending"]


def test_children_that_need_capabilities_go_through_the_claim(client, conn):
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


def test_handed_children_have_what_the_claim_left_of_its_budget(client, conn):
    """The claim takes a ready task of about 38 MB first; of two children as large,
    the first still fits the 64 MiB budget, the second waits for the next step."""
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
    assert states(conn) == ["succeeded", "running", "pending", "running"]


def test_a_child_only_a_claim_may_start_keeps_its_lower_siblings_pending(client, conn):
    """Strict priority among the children a step makes ready: one that needs a
    capability comes first, so none after it is handed over ahead of it."""
    client.submit_batch(
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
    assert step(conn, claim(conn), limit=1) == []
    assert states(conn) == ["succeeded", "pending", "pending"]


def step_racing(dsn, conn, running, change) -> list:
    """Run a step of ``running`` while another session's ``change`` holds the rows it
    touches, and commit that change once the step waits for them. The step's claims."""
    stepped: list = []
    with (
        psycopg.connect(dsn, autocommit=True) as other,
        psycopg.connect(dsn, autocommit=True) as watcher,
    ):
        other.execute("BEGIN")
        change(other)
        stepping = threading.Thread(target=lambda: stepped.append(step(conn, running, 1)))
        stepping.start()
        poll(lambda: watcher.execute(WAITING_FOR_A_LOCK).fetchone()[0], timeout=10)
        other.execute("COMMIT")
        stepping.join(timeout=10)
    assert len(stepped) == 1, "the step failed"
    return stepped[0]


def blocked_child(conn, parents: list[int], pending: int) -> int:
    """A blocked task waiting for ``pending`` of ``parents``, failed ones allowed."""
    child = conn.execute(
        "INSERT INTO omnispindle.tasks (task_type, state, pending_dependencies, "
        "allow_failed_dependencies) VALUES ('job', 'blocked', %s, true) RETURNING id",
        [pending],
    ).fetchone()[0]
    for parent in parents:
        conn.execute(
            "INSERT INTO omnispindle.task_dependencies (task_id, depends_on) VALUES (%s, %s)",
            [child, parent],
        )
    return child


def test_a_parent_retried_while_a_step_finishes_the_other_leaves_the_child_blocked(
    client, conn, dsn
):
    """The step read the child as ready on its last parent; a retry of its other,
    failed parent committed while the step waited for the child's row. The child
    waits for that parent again; the hand-over used to fail the step (and stop its
    worker) with blocked -> running while a parent was unfinished."""
    other = client.submit_task("job")
    running = claim(conn)
    failed = conn.execute(
        "INSERT INTO omnispindle.tasks (task_type, state, attempts, max_attempts, errors, "
        "finished_at) VALUES ('job', 'failed', 1, 2, '[{\"message\": \"x\"}]', now()) "
        "RETURNING id"
    ).fetchone()[0]
    child = blocked_child(conn, [failed, other], pending=1)
    retry = "SELECT * FROM omnispindle.retry_task(%s)"
    assert step_racing(dsn, conn, running, lambda c: c.execute(retry, [failed])) == []
    assert conn.execute(
        "SELECT state::text, pending_dependencies FROM omnispindle.tasks WHERE id = %s", [child]
    ).fetchone() == ("blocked", 1)


def test_a_child_cancelled_while_a_step_finishes_its_parent_stays_cancelled(client, conn, dsn):
    """The countdown used to set a child cancelled meanwhile back to pending, which
    the transition rule refused: the step failed and its worker stopped."""
    parent = client.submit_task("job")
    running = claim(conn)
    child = blocked_child(conn, [parent], pending=1)
    cancel = "SELECT * FROM omnispindle.cancel_task(%s, 'no longer needed')"
    assert step_racing(dsn, conn, running, lambda c: c.execute(cancel, [child])) == []
    assert states(conn) == ["succeeded", "cancelled"]
