"""The paths built for speed: bulk insert, completing and claiming in one statement,
and workers storing many outcomes per statement."""

from __future__ import annotations

import itertools
import threading
import uuid
from datetime import datetime, timedelta, timezone

import psycopg
import pytest

from omnispindle._core.batches import entry
from omnispindle._db import queries as q
from omnispindle._db.pg_arrays import text_array
from omnispindle._db.pool import execute
from omnispindle._db.query import Query
from omnispindle.errors import ValidationError

from ..acceptance.workers import poll
from .test_type_limits import xact_tasks_fetched


def claim(conn, limit=1, task_type="job", lease_seconds=30.0):
    """Claim as a new worker would, from the head of the ready index."""
    return execute(
        conn,
        q.tasks.claim_tasks(
            task_types=[task_type],
            capabilities=[],
            limit=limit,
            worker_id=uuid.uuid4(),
            lease_seconds=lease_seconds,
        ),
    )


def complete_and_claim(conn, rows, limit, results=None, task_type="job", after=(None, None)):
    return execute(
        conn,
        q.tasks.complete_and_claim(
            q.tasks.Results(
                [r["id"] for r in rows],
                [r["lease_token"] for r in rows],
                results or ['{"ok": true}'] * len(rows),
            ),
            task_types=text_array([task_type]),
            capabilities=text_array([]),
            limit=limit,
            worker_id=uuid.uuid4(),
            lease_seconds=30.0,
            after_priority=after[0],
            after_id=after[1],
        ),
    )


def records(queue, ids):
    return queue.db.run(q.tasks.get_tasks(ids))


def test_bulk_path_stores_every_field_of_every_entry_in_order(client, queue, record_statements):
    statements = record_statements()
    run_at = datetime.now(timezone.utc) + timedelta(hours=1)
    entries = [
        {"task_type": "plain"},
        {
            "task_type": "full",
            "parameters": {"text": 'grüße \\ "quoted"', "n": [1, 2.5]},
            "priority": -7,
            "max_retries": 0,
            "retry_backoff": 0.25,
            "timeout": 1.5,
            "required_capabilities": ["gpu", "eu"],
            "run_at": run_at,
        },
    ] * 50
    ids = client.submit_batch(entries)
    assert statements.names == ["insert_tasks_bulk"]
    assert len(ids) == 100 and all(a < b for a, b in itertools.pairwise(ids))
    rows = {r["task_id"]: r for r in records(queue, ids)}
    for task_id, given in zip(ids, entries):
        row = rows[task_id]
        assert row["task_type"] == given["task_type"] and row["state"] == "pending"
        assert row["parameters"] == given.get("parameters", {})
        assert row["priority"] == given.get("priority", 0)
        assert row["max_attempts"] == given.get("max_retries", 3) + 1
    full = records(queue, [ids[1]])[0]
    assert full["run_after"] == run_at


STORED_FIELDS = """
SELECT parameters, priority, max_attempts, retry_backoff, timeout_seconds,
       required_capabilities, run_after <= now() AS due
FROM omnispindle.tasks WHERE id = ANY(%(ids)s) ORDER BY id
"""

DEFAULT_VALUED = {
    "task_type": "t",
    "parameters": {},
    "priority": 0,
    "max_retries": 3,
    "retry_backoff": 1.0,
    "timeout": None,
    "required_capabilities": [],
}


def test_fields_left_out_of_the_bulk_document_are_stored_as_the_checking_path_stores_them(
    client, conn
):
    bulk = client.submit_batch([{"task_type": "t"}, DEFAULT_VALUED])
    checked = client.submit_batch(
        [{"task_type": "t", "idempotency_key": "a"}, {**DEFAULT_VALUED, "idempotency_key": "b"}]
    )
    stored = [conn.execute(STORED_FIELDS, {"ids": ids}).fetchall() for ids in (bulk, checked)]
    assert stored[0] == stored[1]
    assert stored[0][0] == ({}, 0, 4, 1.0, None, [], True)


def test_bulk_batches_submitted_at_once_each_get_their_own_ids_in_order(client, queue):
    """Concurrent inserts interleave identities: each call still gets back the
    ids of its own entries, in order (they come back as runs of ids)."""
    batches, size = 4, 3000
    returned: dict[int, list[int]] = {}
    start = threading.Barrier(batches)

    def submit(who: int) -> None:
        start.wait(timeout=30)
        returned[who] = client.submit_batch(
            [{"task_type": "t", "parameters": {"who": who, "i": i}} for i in range(size)]
        )

    threads = [threading.Thread(target=submit, args=(who,)) for who in range(batches)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(returned) == list(range(batches))
    for who, ids in returned.items():
        rows = records(queue, ids)
        by_id = {row["task_id"]: row["parameters"] for row in rows}
        assert [by_id[task_id] for task_id in ids] == [{"who": who, "i": i} for i in range(size)]


def test_a_batch_with_existing_parents_or_keys_takes_the_checking_path(client, record_statements):
    statements = record_statements()
    [parent] = client.submit_batch([{"task_type": "a"}])
    client.submit_batch([{"task_type": "a"}, {"task_type": "b", "dependencies": [entry(0)]}])
    client.submit_batch(
        [{"task_type": "a"}, {"task_type": "b", "dependencies": [parent, entry(0)]}]
    )
    client.submit_batch([{"task_type": "a", "idempotency_key": "once"}])
    assert statements.names == [
        "insert_tasks_bulk",
        "insert_linked_bulk",
        "submit_tasks",
        "submit_tasks",
    ]


LINKED = [
    {"key": "root", "task_type": "root", "parameters": {"n": 1}, "priority": 3},
    {"task_type": "mid", "dependencies": ["root"], "timeout": 2.5},
    {"task_type": "mid", "dependencies": ["root"], "required_capabilities": ["gpu"]},
    {"task_type": "late", "dependencies": [entry(5)], "allow_failed_dependencies": True},
    {"task_type": "alone", "allow_failed_dependencies": True, "max_retries": 0},
    {"task_type": "sink", "dependencies": [entry(1), entry(2), "root", entry(1)]},
]

STORED_SHAPE = """
SELECT t.task_type, t.state::text, t.pending_dependencies, t.allow_failed_dependencies,
       t.parameters, t.priority, t.max_attempts, t.timeout_seconds, t.required_capabilities,
       (SELECT array_agg(p.position ORDER BY p.position)
        FROM omnispindle.task_dependencies d
        JOIN unnest(%(ids)s::bigint[]) WITH ORDINALITY AS p(id, position) ON p.id = d.depends_on
        WHERE d.task_id = t.id) AS parents
FROM unnest(%(ids)s::bigint[]) WITH ORDINALITY AS s(id, position)
JOIN omnispindle.tasks t ON t.id = s.id
ORDER BY s.position
"""


def test_a_batch_linked_within_itself_is_stored_as_the_checking_path_stores_it(
    client, conn, record_statements
):
    statements = record_statements()
    linked = client.submit_batch(LINKED)
    # An idempotency key sends the same batch through submit_tasks.
    checked = client.submit_batch([{**LINKED[0], "idempotency_key": "k"}, *LINKED[1:]])
    assert statements.names == ["insert_linked_bulk", "submit_tasks"]
    stored = [conn.execute(STORED_SHAPE, {"ids": ids}).fetchall() for ids in (linked, checked)]
    assert stored[0] == stored[1]
    assert [(row[1], row[2], row[9]) for row in stored[0]] == [
        ("pending", 0, None),
        ("blocked", 1, [1]),
        ("blocked", 1, [1]),
        ("blocked", 1, [6]),
        ("pending", 0, None),
        ("blocked", 3, [1, 2, 3]),
    ]


def test_linked_batches_submitted_at_once_each_link_their_own_entries(client, conn):
    """Concurrent inserts interleave identities: each chain's links still join
    its own entries, one after another."""
    batches, size = 4, 1500
    returned: dict[int, list[int]] = {}
    start = threading.Barrier(batches)

    def submit(who: int) -> None:
        start.wait(timeout=30)
        returned[who] = client.submit_batch(
            [{"task_type": "t", "dependencies": [entry(i - 1)] if i else []} for i in range(size)]
        )

    threads = [threading.Thread(target=submit, args=(who,)) for who in range(batches)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(returned) == list(range(batches))
    for ids in returned.values():
        edges = conn.execute(
            "SELECT task_id, depends_on FROM omnispindle.task_dependencies "
            "WHERE task_id = ANY (%s) ORDER BY task_id",
            [ids],
        ).fetchall()
        assert edges == [(child, parent) for parent, child in itertools.pairwise(ids)]


LINKED_CALL = "SELECT * FROM omnispindle.insert_linked_tasks(%s::jsonb, NULL, 0, 3, 1.0, NULL, 0)"


@pytest.mark.parametrize(
    "after",
    [[2], [1], [-1], [0.5], ["0"], [None], 0, "0", {"0": 1}, [1_000_000_000_000]],
    ids=[
        "past-the-end",
        "itself",
        "negative",
        "fraction",
        "string",
        "null",
        "number",
        "text",
        "object",
        "huge",
    ],
)
def test_a_linked_document_naming_no_other_entry_is_refused_whole(conn, after):
    """Called from SQL, as a producer may: a parent that is no other entry of the
    batch would leave its child blocked for ever; nothing goes in."""
    before = conn.execute("SELECT count(*) FROM omnispindle.tasks").fetchone()
    rows = [{"task_type": "a"}, {"task_type": "b", "after": after}]
    with pytest.raises(psycopg.Error) as refused:
        conn.execute(LINKED_CALL, [psycopg.types.json.Jsonb(rows)])
    assert refused.value.sqlstate == "OS005"
    assert conn.execute("SELECT count(*) FROM omnispindle.tasks").fetchone() == before


def test_a_parent_named_twice_in_a_linked_document_is_waited_for_once(conn):
    rows = [{"task_type": "a"}, {"task_type": "a"}, {"task_type": "b", "after": [0, 1, 0]}]
    [(first, last)] = conn.execute(LINKED_CALL, [psycopg.types.json.Jsonb(rows)]).fetchall()
    assert last - first == 2
    assert conn.execute(
        "SELECT state::text, pending_dependencies, "
        "(SELECT count(*) FROM omnispindle.task_dependencies WHERE task_id = %s) "
        "FROM omnispindle.tasks WHERE id = %s",
        [last, last],
    ).fetchone() == ("blocked", 2, 2)


def test_one_call_stores_results_fenced_by_lease_and_claims_more(client, conn):
    ids = client.submit_batch([{"task_type": "job"}] * 5)
    first = claim(conn, 3)
    stale = {**first[2], "lease_token": uuid.uuid4()}  # a lease taken over meanwhile
    rows = complete_and_claim(conn, [first[0], first[1], stale], limit=2)
    dropped = [r["id"] for r in rows if r["dropped"]]
    claimed = sorted(r["id"] for r in rows if not r["dropped"])
    assert dropped == [stale["id"]]
    assert claimed == ids[3:5]
    states = dict(conn.execute("SELECT id, state::text FROM omnispindle.tasks").fetchall())
    assert [states[i] for i in ids] == ["succeeded", "succeeded", "running", "running", "running"]


def test_a_child_made_ready_by_the_completions_is_claimed_by_the_same_call(client, conn):
    parent, child = client.submit_batch(
        [{"task_type": "job"}, {"task_type": "job", "dependencies": [entry(0)]}]
    )
    rows = complete_and_claim(conn, claim(conn, 5), limit=5, results=['{"v": 42}'])
    claimed = [r for r in rows if not r["dropped"]]
    assert [r["id"] for r in claimed] == [child]
    assert claimed[0]["dependency_results"] == {str(parent): {"v": 42}}


def test_a_step_announces_no_child_it_claims_itself(client, conn, ready_notices):
    """A chain's next link is the completing worker's own: a ready notice would
    only wake it (and others) for a claim that finds nothing."""
    client.submit_batch([{"task_type": "job"}, {"task_type": "job", "dependencies": [entry(0)]}])
    parent = claim(conn)
    claimed = []
    assert ready_notices(lambda: claimed.extend(complete_and_claim(conn, parent, limit=1))) == []
    assert [r["task_type"] for r in claimed] == ["job"]


@pytest.mark.parametrize(
    "child_type, limit", [("other", 1), ("job", 0)], ids=["not-its-type", "no-free-slot"]
)
def test_a_step_announces_the_children_it_leaves_pending(
    client, conn, ready_notices, child_type, limit
):
    client.submit_batch(
        [{"task_type": "job"}, {"task_type": child_type, "dependencies": [entry(0)]}]
    )
    parent = claim(conn)
    assert ready_notices(lambda: complete_and_claim(conn, parent, limit=limit)) == [""]
    assert conn.execute(
        "SELECT count(*) FROM omnispindle.tasks WHERE state = 'pending'"
    ).fetchone() == (1,)


@pytest.mark.parametrize("limit", [1, 0], ids=["step-that-claims", "plain-countdown"])
def test_a_countdown_that_leaves_its_child_blocked_adds_no_index_entry(client, conn, limit):
    """A fan-in's last task is counted down by every step that stores one of its
    parents. While it stays blocked, only its count changes: an update that
    Postgres keeps on the row's page (HOT), without a new entry in each index
    and without a new version for every later lookup by key to step over."""
    *_, fan_in = client.submit_batch(
        [{"task_type": "job"}] * 3
        + [{"task_type": "job", "dependencies": [entry(0), entry(1), entry(2)]}]
    )
    held = claim(conn, 3)
    due = "SELECT run_after FROM omnispindle.tasks WHERE id = %s"
    submitted_due = conn.execute(due, [fan_in]).fetchone()
    with conn.transaction():
        complete_and_claim(conn, held[:1], limit=limit)
        kept_on_page = conn.execute(
            "SELECT pg_stat_get_xact_tuples_hot_updated('omnispindle.tasks'::regclass)"
        ).fetchone()
    assert kept_on_page == (1,)  # the parent's own update changes indexed columns
    assert conn.execute(due, [fan_in]).fetchone() == submitted_due
    assert conn.execute(
        "SELECT state::text, pending_dependencies FROM omnispindle.tasks WHERE id = %s", [fan_in]
    ).fetchone() == ("blocked", 2)
    rows = complete_and_claim(conn, held[1:], limit=limit)
    assert [r["id"] for r in rows if not r["dropped"]] == ([fan_in] if limit else [])
    assert conn.execute(due, [fan_in]).fetchone() > submitted_due  # due once ready, as before


def test_a_step_that_readies_no_child_counts_down_without_the_hand_over(client, conn):
    """The hand-over's statement costs more to start than the plain countdown: a
    step runs it only when a child may become ready, not at every step that
    stores one of a fan-in's many parents."""
    *_, fan_in = client.submit_batch(
        [{"task_type": "job"}] * 3
        + [{"task_type": "job", "dependencies": [entry(0), entry(1), entry(2)]}]
    )
    held = claim(conn, 3)
    plans = plans_of_nested_statements(conn)
    assert [r["id"] for r in complete_and_claim(conn, held[:1], limit=3)] == []
    assert conn.execute(
        "SELECT state::text, pending_dependencies FROM omnispindle.tasks WHERE id = %s", [fan_in]
    ).fetchone() == ("blocked", 2)
    assert not [plan for plan in plans if "first_ready_task" in plan], plans
    rows = complete_and_claim(conn, held[1:], limit=3)
    assert [r["id"] for r in rows if not r["dropped"]] == [fan_in]
    assert [plan for plan in plans if "first_ready_task" in plan], plans


def test_a_step_with_many_edges_to_count_down_runs_the_hand_over_without_choosing(client, conn):
    """Choosing reads each child once more: past 32 edges that costs more than the
    hand-over's start (steps storing parents of 500 children each took 30 to 48 %
    longer)."""
    client.submit_batch(
        [{"task_type": "job"}] * 2
        + [{"task_type": "job", "dependencies": [entry(0), entry(1)]}] * 33
    )
    held = claim(conn, 2)
    plans = plans_of_nested_statements(conn)
    assert complete_and_claim(conn, held[:1], limit=3) == []
    assert [plan for plan in plans if "first_ready_task" in plan], plans
    assert conn.execute(
        "SELECT state::text, pending_dependencies, count(*) FROM omnispindle.tasks "
        "WHERE pending_dependencies > 0 GROUP BY 1, 2"
    ).fetchall() == [("blocked", 1, 33)]


def test_a_workers_step_keeps_its_plans_instead_of_planning_every_call(conn):
    """Arrays as parameters made the plan cache plan every call afresh (a fifth of
    a chain step's time in Postgres); the plans those settings keep are checked
    by the tests below, which force generic plans."""
    settings = dict(
        conn.execute(
            "SELECT p.proname, p.proconfig FROM pg_proc p "
            "WHERE p.pronamespace = 'omnispindle'::regnamespace AND p.proname = ANY (%s)",
            [["complete_and_claim", "complete_attempts", "fail_attempts", "after_tasks_update"]],
        ).fetchall()
    )
    assert len(settings) == 4
    for name, config in settings.items():
        assert "plan_cache_mode=force_generic_plan" in (config or []), name


def plans_of_nested_statements(conn) -> list[str]:
    """Collect the plan of every statement run inside functions on ``conn``,
    as generic plans (what PL/pgSQL keeps once a function ran a few times)."""
    try:
        conn.execute("LOAD 'auto_explain'")
    except psycopg.Error:
        pytest.skip("this server has no auto_explain")
    for setting in (
        "auto_explain.log_min_duration = 0",
        "auto_explain.log_nested_statements = on",
        "auto_explain.log_level = notice",
        "plan_cache_mode = force_generic_plan",
    ):
        conn.execute(f"SET {setting}")
    plans: list[str] = []
    conn.add_notice_handler(lambda notice: plans.append(notice.message_primary or ""))
    return plans


def test_completions_and_failures_look_tasks_up_by_key_in_a_plan_made_on_a_small_table(
    client, conn
):
    client.submit_batch([{"task_type": "job"}] * 4)
    rows = claim(conn, 4)
    plans = plans_of_nested_statements(conn)
    execute(
        conn,
        q.tasks.complete_tasks(
            q.tasks.Results(
                [r["id"] for r in rows[:2]], [r["lease_token"] for r in rows[:2]], ["{}", "{}"]
            )
        ),
    )
    execute(
        conn,
        q.tasks.fail_tasks(
            ids=[r["id"] for r in rows[2:]],
            tokens=[r["lease_token"] for r in rows[2:]],
            errors=['{"message": "x"}'] * 2,
        ),
    )
    updates = [plan for plan in plans if "Update on tasks" in plan]
    assert len(updates) >= 2, plans
    assert not [plan for plan in updates if "Seq Scan on tasks" in plan], updates
    assert all("Index Scan using tasks_pkey" in plan for plan in updates), updates


@pytest.mark.parametrize("outcome", ["succeeded", "failed"])
def test_a_worker_that_first_stored_on_an_emptied_table_still_finds_each_task_by_key(
    client, conn, outcome
):
    """A worker's first step plans how its results are stored, once for the session.
    On a table vacuum had emptied, the plan read the whole primary key to join the
    results against it: every later step read every task (20,000 tasks then
    drained at 570 a second instead of 10,000)."""
    client.submit_batch([{"task_type": "job"}])
    conn.execute("DELETE FROM omnispindle.tasks")
    conn.execute("VACUUM omnispindle.tasks")  # truncated: the planner sees no rows
    execute(conn, storing(outcome, []))  # the session's plan, made on the empty table
    client.submit_batch([{"task_type": "job"}] * 2_000)
    rows = claim(conn, 1)
    with conn.transaction():
        before = xact_tasks_fetched(conn)
        assert len(execute(conn, storing(outcome, rows))) == 1
        assert xact_tasks_fetched(conn) - before < 50


def storing(outcome: str, rows: list) -> Query[list]:
    """The statement that stores ``rows``' attempts as succeeded or failed."""
    ids, tokens = [r["id"] for r in rows], [r["lease_token"] for r in rows]
    if outcome == "succeeded":
        return q.tasks.complete_tasks(q.tasks.Results(ids, tokens, ["{}"] * len(rows)))
    return q.tasks.fail_tasks(ids=ids, tokens=tokens, errors=['{"message": "x"}'] * len(rows))


def test_finishing_parents_looks_their_children_up_by_key_in_plans_made_on_small_tables(
    client, conn
):
    parents = client.submit_batch([{"task_type": "job", "max_retries": 0}] * 3)
    client.submit_batch([{"task_type": "child", "dependencies": [p]} for p in parents])
    rows = claim(conn, 3)
    plans = plans_of_nested_statements(conn)
    execute(
        conn,
        q.tasks.complete_tasks(q.tasks.Results([rows[0]["id"]], [rows[0]["lease_token"]], ["{}"])),
    )
    execute(
        conn,
        q.tasks.fail_tasks(
            ids=[r["id"] for r in rows[1:]],
            tokens=[r["lease_token"] for r in rows[1:]],
            errors=['{"message": "x"}'] * 2,
        ),
    )
    assert [plan for plan in plans if "task_dependencies" in plan], plans
    assert not [plan for plan in plans if "Seq Scan on task" in plan], plans
    states = conn.execute("SELECT task_type, state::text FROM omnispindle.tasks ORDER BY id")
    assert states.fetchall() == [
        ("job", "succeeded"),
        ("job", "failed"),
        ("job", "failed"),
        ("child", "pending"),
        ("child", "cancelled"),
        ("child", "cancelled"),
    ]


@pytest.mark.parametrize("statement", ["heartbeat", "cancel_requests"])
def test_a_workers_own_leases_are_found_by_key_not_by_walking_the_running_index(
    client, conn, statement
):
    """Under an old snapshot the running index keeps an entry for every attempt
    it still sees; a worker's periodic statements must not walk them."""
    client.submit_batch([{"task_type": "job"}] * 3)
    rows = claim(conn, 3)
    plans = plans_of_nested_statements(conn)
    ids, tokens = [r["id"] for r in rows[:2]], [r["lease_token"] for r in rows[:2]]
    query = (
        q.workers.heartbeat(
            worker_id=uuid.uuid4(), lease_seconds=30.0, ids=ids, tokens=tokens, concurrency=1
        )
        if statement == "heartbeat"
        else q.tasks.cancel_requests(ids=ids, tokens=tokens)
    )
    found = conn.execute(query.statement.text, query.params, prepare=True).fetchall()
    top = plans[-1]  # logged once its nested statements (the update trigger's) are
    assert "tasks_pkey" in top and "tasks_running_idx" not in top, plans
    if statement == "heartbeat":
        assert sorted(found) == sorted((r["id"], False) for r in rows[:2])


def test_a_refused_result_stores_nothing_of_its_statement(client, conn):
    ids = client.submit_batch([{"task_type": "job"}] * 3)
    rows = claim(conn, 3)
    with pytest.raises(ValidationError):
        complete_and_claim(conn, rows, limit=0, results=["{}", '"\\u0000"', "{}"])
    states = conn.execute(
        "SELECT count(*) FROM omnispindle.tasks WHERE state = 'running'"
    ).fetchone()
    assert states == (3,)  # nothing half-stored
    assert sorted(ids) == sorted(r["id"] for r in rows)


def test_a_worker_stores_many_outcomes_per_statement(client, start_worker, record_statements):
    statements = record_statements()
    ids = client.submit_batch([{"task_type": "noop"}] * 400)
    start_worker({"noop": lambda task: {"n": task["task_id"]}}, concurrency=20)
    tasks = client.wait_for_batch(ids, timeout=60)
    assert [t["result"] for t in tasks] == [{"n": i} for i in ids]
    steps = statements.names.count("complete_and_claim")
    # One statement per task would be 400; batches of several make far fewer.
    assert steps < 200, steps


def test_workers_racing_over_one_backlog_run_each_task_once(client, queue, start_worker):
    runs: dict[int, int] = {}
    lock = threading.Lock()

    def count(task):
        with lock:
            runs[task["task_id"]] = runs.get(task["task_id"], 0) + 1
        return {}

    ids = client.submit_batch([{"task_type": "noop"}] * 600)
    for _ in range(3):
        start_worker({"noop": count}, concurrency=16)
    poll(lambda: len(runs) == 600, timeout=60)
    client.wait_for_batch(ids, timeout=60)
    assert sorted(runs) == sorted(ids) and set(runs.values()) == {1}
