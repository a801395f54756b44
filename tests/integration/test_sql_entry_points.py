"""Plain SQL as an entry point: enqueue(), retry_task(), a bare INSERT, transitions that
say what to do, and liveness in the views (issue 20, findings 5, 6 and 13)."""

from __future__ import annotations

import json
import threading

import psycopg
import pytest

from omnispindle import (
    IllegalTransitionError,
    TaskStateError,
    ValidationError,
)
from omnispindle._core import defaults
from omnispindle._db.sqlstate import translate
from omnispindle.cli.main import main
from omnispindle.cli.status import liveness_warnings

from .test_type_limits import poll, waiting_for_a_lock

DEADLINE = 60


def enqueue(conn: psycopg.Connection, call: str, params: dict | None = None) -> int:
    return conn.execute(f"SELECT omnispindle.enqueue({call})", params or {}).fetchone()[0]


def timeout_of(conn: psycopg.Connection, task_id: int) -> float | None:
    query = "SELECT timeout_seconds FROM omnispindle.tasks WHERE id = %s"
    return conn.execute(query, [task_id]).fetchone()[0]


def refused(conn: psycopg.Connection, statement: str, params: dict | None = None):
    """The typed error a statement is refused with (the connection is autocommit)."""
    with pytest.raises(psycopg.Error) as caught:
        conn.execute(statement, params or {})
    return translate(caught.value)


# --- enqueue -------------------------------------------------------------------------------


def test_enqueue_with_only_a_task_type_takes_the_python_defaults(conn, client):
    task = client.get_task(enqueue(conn, "'email'"))
    assert task["state"] == "pending"
    assert task["parameters"] == {}
    assert task["priority"] == defaults.PRIORITY
    assert task["max_attempts"] == defaults.MAX_ATTEMPTS
    assert timeout_of(conn, task["task_id"]) is None


def add(task):
    return {"sum": sum(task["parameters"]["values"])}


def test_enqueue_takes_named_arguments_and_runs_on_a_worker(conn, client, start_worker):
    parent = enqueue(conn, "'add', '{\"values\": [1, 2]}'")
    child = enqueue(
        conn,
        "'add', jsonb_build_object('values', ARRAY[3, 4]), priority => 5, max_retries => 0, "
        "timeout => 30, dependencies => ARRAY[%(parent)s]::bigint[], "
        "idempotency_key => 'nightly'",
        {"parent": parent},
    )
    assert client.get_task(child)["state"] == "blocked"
    again = enqueue(conn, "'add', idempotency_key => 'nightly'")
    assert again == child
    start_worker({"add": add})
    done = client.wait_for_task(child, timeout=DEADLINE)
    assert done["result"] == {"sum": 7}
    assert (done["priority"], done["max_attempts"], timeout_of(conn, child)) == (5, 1, 30.0)


def test_enqueue_delays_a_task(conn, client):
    later = client.get_task(enqueue(conn, "'report', delay => interval '1 hour'"))
    assert later["state"] == "pending"
    with conn.cursor() as cur:
        due = cur.execute(
            "SELECT run_after > now() + interval '59 minutes' FROM omnispindle.tasks WHERE id = %s",
            [later["task_id"]],
        ).fetchone()[0]
    assert due


@pytest.mark.parametrize(
    ("call", "says"),
    [
        ("'t', '[1, 2]'", "parameters must be a JSON object"),
        ("'t', max_retries => 101", "max_retries must be from 0 to 100"),
        ("'t', priority => 5000", "tasks_priority_range"),
        ("''", "tasks_task_type_valid"),
        ("'t', timeout => -1", "tasks_timeout_positive"),
        ("'t', run_at => now(), delay => interval '1 s'", "run_at or delay, not both"),
        ("'t', required_capabilities => ARRAY['gpu', '']", "tasks_required_capabilities_valid"),
        ("'t', required_capabilities => ARRAY[NULL]", "tasks_required_capabilities_valid"),
        ("'t', run_at => 'infinity'", "tasks_run_after_range"),
        ("'t', run_at => '10000-01-01 00:00:00+00'", "tasks_run_after_range"),
        ("'t', delay => interval '9000 years'", "tasks_run_after_range"),
        # Both failed with psycopg's own errors: not_null_violation, timestamp out of range.
        ("NULL", "task_type must be a non-empty string, got NULL"),
        ("NULL::text, '{\"a\": 1}'", "task_type must be a non-empty string, got NULL"),
        ("'t', delay => interval '170000000 years'", "reaches beyond the year 9999"),
        ("'t', delay => make_interval(days => 2000000000)", "reaches beyond the year 9999"),
        ("'t', delay => interval '-170000000 years'", "reaches before the year 1"),
        ("'t', delay => interval '-3000 years'", "tasks_run_after_range"),
    ],
)
def test_enqueue_refuses_bad_arguments_with_a_typed_error(conn, call, says):
    error = refused(conn, f"SELECT omnispindle.enqueue({call})")
    assert isinstance(error, ValidationError) and says in str(error)
    assert conn.execute("SELECT count(*) FROM omnispindle.tasks").fetchone()[0] == 0


def test_a_bare_insert_gets_a_state_and_runs(conn, client, start_worker):
    """Finding 6: ``INSERT ... (task_type, parameters)`` failed on ``state`` being null."""
    task_id = conn.execute(
        "INSERT INTO omnispindle.tasks (task_type, parameters) "
        "VALUES ('add', '{\"values\": [5, 6]}') RETURNING id"
    ).fetchone()[0]
    start_worker({"add": add})
    assert client.wait_for_task(task_id, timeout=DEADLINE)["result"] == {"sum": 11}


# --- retry ---------------------------------------------------------------------------------


def failed_chain(conn: psycopg.Connection) -> tuple[int, int, int]:
    """A failed task with two generations of dependents its failure cancelled."""
    root, child, grandchild = chain(conn)
    fail(conn, root)
    return root, child, grandchild


def chain(conn: psycopg.Connection) -> tuple[int, int, int]:
    root = enqueue(conn, "'root', max_retries => 0")
    child = enqueue(conn, "'child', dependencies => ARRAY[%(p)s]::bigint[]", {"p": root})
    grandchild = enqueue(conn, "'grandchild', dependencies => ARRAY[%(p)s]::bigint[]", {"p": child})
    return root, child, grandchild


def fail(conn: psycopg.Connection, root: int) -> None:
    """Run ``root``'s one attempt and fail it, as a worker would."""
    conn.execute(
        "UPDATE omnispindle.tasks SET state = 'running', attempts = 1, started_at = now(), "
        "lease_token = gen_random_uuid(), lease_expires_at = now() + interval '1 h' "
        "WHERE id = %(id)s",
        {"id": root},
    )
    conn.execute(
        "UPDATE omnispindle.tasks SET state = 'failed', finished_at = now(), lease_token = NULL, "
        'lease_expires_at = NULL, errors = \'[{"message": "boom"}]\' WHERE id = %(id)s',
        {"id": root},
    )


def states(conn: psycopg.Connection, *ids: int) -> list[str]:
    found = dict(
        conn.execute(
            "SELECT id, state::text FROM omnispindle.tasks WHERE id = ANY (%s)", [list(ids)]
        ).fetchall()
    )
    return [found[i] for i in ids]


def test_the_natural_update_says_to_call_retry_task(conn):
    """Finding 6: ``SET state = 'pending'`` was refused without saying what to do."""
    root, _, _ = failed_chain(conn)
    error = refused(
        conn, "UPDATE omnispindle.tasks SET state = 'pending' WHERE id = %(id)s", {"id": root}
    )
    assert isinstance(error, IllegalTransitionError)
    assert str(error) == (
        f"illegal task state transition failed -> pending for task {root}: it has used all 1 "
        f"of its attempts; run SELECT * FROM omnispindle.retry_task({root}), or raise "
        "max_attempts in the same UPDATE"
    )


def exhausted(conn: psycopg.Connection) -> int:
    """A task of max_retries=100, the most there is, whose 101 attempts all failed."""
    task_id = enqueue(conn, "'t', max_retries => 100, retry_backoff => 0")
    for _ in range(101):
        conn.execute(FAILED_FOR_GOOD, {"id": task_id, "token": running(conn, task_id)})
    assert states(conn, task_id) == ["failed"]
    return task_id


def test_a_task_that_used_the_most_attempts_there_are_is_refused_a_retry_saying_why(
    conn, client, dsn, capsys
):
    task_id = exhausted(conn)
    other = exhausted(conn)
    before = conn.execute("SELECT * FROM omnispindle.tasks ORDER BY id").fetchall()
    says = (
        f"task {task_id} has used all 101 attempts a task may have; submit it again as a new task"
    )
    error = refused(conn, "SELECT * FROM omnispindle.retry_task(%(id)s)", {"id": task_id})
    assert isinstance(error, TaskStateError) and str(error) == says
    with pytest.raises(TaskStateError) as caught:
        client.retry_task(task_id, with_dependents=True)
    assert str(caught.value) == says
    capsys.readouterr()
    assert main(["retry", str(task_id), str(other), "--dsn", dsn]) == 1
    assert capsys.readouterr().err == f"omnispindle: {says}\n"
    assert conn.execute("SELECT * FROM omnispindle.tasks ORDER BY id").fetchall() == before


def test_retry_task_in_sql_leaves_the_dependents_cancelled_by_default(conn):
    root, child, grandchild = failed_chain(conn)
    assert states(conn, child, grandchild) == ["cancelled", "cancelled"]
    row = conn.execute("SELECT * FROM omnispindle.retry_task(%s)", [root]).fetchone()
    assert row == (root, "pending", 1, 2, [])
    assert states(conn, root, child, grandchild) == ["pending", "cancelled", "cancelled"]


def test_retry_task_with_dependents_brings_back_the_subtree_its_failure_cancelled(conn):
    """Finding 13: a failed task could not be retried together with its dependents."""
    root, child, grandchild = failed_chain(conn)
    error = refused(
        conn, "UPDATE omnispindle.tasks SET state = 'pending' WHERE id = %(id)s", {"id": child}
    )
    assert "retry that one with omnispindle.retry_task(id, with_dependents => true)" in str(error)
    row = conn.execute(
        "SELECT * FROM omnispindle.retry_task(%s, with_dependents => true)", [root]
    ).fetchone()
    assert row == (root, "pending", 1, 2, [child, grandchild])
    assert states(conn, root, child, grandchild) == ["pending", "blocked", "blocked"]
    waiting = conn.execute(
        "SELECT pending_dependencies, cancel_reason, finished_at FROM omnispindle.tasks "
        "WHERE id = ANY (%s) ORDER BY id",
        [[child, grandchild]],
    ).fetchall()
    assert waiting == [(1, None, None), (1, None, None)]


def test_a_dependent_that_another_failure_doomed_stays_cancelled(conn):
    root, child, _ = chain(conn)
    other = enqueue(conn, "'other'")
    both = enqueue(
        conn, "'both', dependencies => ARRAY[%(a)s, %(b)s]::bigint[]", {"a": child, "b": other}
    )
    fail(conn, root)
    conn.execute("SELECT * FROM omnispindle.cancel_task(%s, 'not needed')", [other])
    assert states(conn, child, both, other) == ["cancelled", "cancelled", "cancelled"]
    conn.execute("SELECT * FROM omnispindle.retry_task(%s, with_dependents => true)", [root])
    assert states(conn, child, both) == ["blocked", "cancelled"]


def running(conn: psycopg.Connection, task_id: int) -> str:
    """Start ``task_id``'s attempt as a claim would; its lease token."""
    return conn.execute(
        "UPDATE omnispindle.tasks SET state = 'running', attempts = attempts + 1, "
        "started_at = now(), lease_token = gen_random_uuid(), "
        "lease_expires_at = now() + interval '1 h' WHERE id = %(id)s RETURNING lease_token",
        {"id": task_id},
    ).fetchone()[0]


# How a worker ends the other parent's last attempt, and the function it calls.
FAILED_FOR_GOOD = (
    "SELECT * FROM omnispindle.fail_attempts(ARRAY[%(id)s]::bigint[], "
    'ARRAY[%(token)s]::uuid[], ARRAY[\'{"message": "boom"}\']::jsonb[])'
)
SUCCEEDED = (
    "SELECT * FROM omnispindle.complete_attempts(ARRAY[%(id)s]::bigint[], "
    "ARRAY[%(token)s]::uuid[], ARRAY['{}']::jsonb[])"
)
ENDINGS = {
    "fails": (FAILED_FOR_GOOD, "fail_attempts"),
    "succeeds": (SUCCEEDED, "complete_attempts"),
}
RETRY_WITH_DEPENDENTS = "SELECT * FROM omnispindle.retry_task(%(id)s, with_dependents => true)"


def while_held(dsn, conn, held: tuple[str, dict], other: tuple[str, dict], other_calls: str):
    """Run ``held`` in a transaction left open, then ``other`` on a connection of its
    own until it ends or waits for a lock (a statement calling ``other_calls``), then
    commit ``held``. The rows each returned, and whether ``other`` waited."""
    outcome: dict[str, object] = {}

    def ended_or_waiting() -> str | None:
        if outcome:
            return "ended"
        return "waiting" if waiting_for_a_lock(conn, other_calls) else None

    def run_other() -> None:
        try:
            with psycopg.connect(dsn, autocommit=True) as own:
                outcome["other"] = own.execute(*other).fetchall()
        except Exception as exc:  # the test reports it
            outcome["error"] = exc

    with psycopg.connect(dsn) as holder:
        held_rows = holder.execute(*held).fetchall()
        thread = threading.Thread(target=run_other)
        thread.start()
        seen = poll(ended_or_waiting, DEADLINE)
        holder.commit()
        thread.join(DEADLINE)
    assert "error" not in outcome, outcome
    return held_rows, outcome["other"], seen == "waiting"


def parents_and_child(conn: psycopg.Connection) -> tuple[int, int, int, str]:
    """A child of two parents: the first failed, which cancelled the child; the
    second running its last attempt (with the token returned)."""
    first = enqueue(conn, "'first', max_retries => 0")
    second = enqueue(conn, "'second', max_retries => 0")
    child = enqueue(
        conn, "'child', dependencies => ARRAY[%(a)s, %(b)s]::bigint[]", {"a": first, "b": second}
    )
    fail(conn, first)
    return first, second, child, running(conn, second)


def waiting_or_cancelled(conn: psycopg.Connection, task_id: int) -> tuple:
    """(state, parents it waits for) of a blocked task, (state, cause) of a cancelled one."""
    return conn.execute(
        "SELECT state::text, CASE WHEN state = 'cancelled' THEN cancel_reason "
        "ELSE pending_dependencies::text END FROM omnispindle.tasks WHERE id = %s",
        [task_id],
    ).fetchone()


@pytest.mark.parametrize("ending", ["fails", "succeeds"])
def test_a_retry_with_dependents_left_open_while_the_other_parent_ends(conn, dsn, ending):
    """A child brought back by a retry of its failed parent, while its other parent's
    last attempt ended before the retry committed, was left blocked as if that parent
    still ran: the failure's cascade, and the success's countdown, read the child as
    cancelled. Failed, the child waited, never to run, for the sweeper to cancel it;
    succeeded, it counted that parent as unfinished, and so did not start when the
    retried parent succeeded, until the sweeper found it. The parent's end now waits
    for the retry."""
    first, second, child, token = parents_and_child(conn)
    end, ends_in = ENDINGS[ending]
    [retried], _, waited = while_held(
        dsn,
        conn,
        (RETRY_WITH_DEPENDENTS, {"id": first}),
        (end, {"id": second, "token": token}),
        ends_in,
    )
    if ending == "fails":
        expected = ("cancelled", f"dependency {second} failed")
    else:
        expected = ("blocked", "1")
    assert waiting_or_cancelled(conn, child) == expected
    assert retried[4] == [child]
    assert waited  # the parent's end, for the retry's commit


@pytest.mark.parametrize("ending", ["fails", "succeeds"])
def test_a_retry_with_dependents_while_the_other_parent_ends_uncommitted(conn, dsn, ending):
    """A retry of a failed parent run while its child's other parent's last attempt
    had ended but not committed brought the child back as waiting for that parent:
    failed, the child was left blocked (its cascade had read it cancelled) until the
    sweeper cancelled it; succeeded, the child counted it as unfinished. The retry
    now waits for that parent's end and reads it."""
    first, second, child, token = parents_and_child(conn)
    end, _ = ENDINGS[ending]
    _, [retried], waited = while_held(
        dsn,
        conn,
        (end, {"id": second, "token": token}),
        (RETRY_WITH_DEPENDENTS, {"id": first}),
        "retry_task",
    )
    if ending == "fails":
        expected, revived = ("cancelled", f"dependency {first} failed"), []
    else:
        expected, revived = ("blocked", "1"), [child]
    assert waiting_or_cancelled(conn, child) == expected
    assert retried[4] == revived
    assert waited  # the retry, for the parent's end to commit


@pytest.mark.parametrize("retry_first", [True, False])
def test_a_grandchild_whose_other_parent_fails_during_a_retry_stays_cancelled(
    conn, dsn, retry_first
):
    """The same race one generation down: the grandchild brought back with its
    parent by the retry, as its other parent failed, was left blocked."""
    root, child, _ = chain(conn)
    other = enqueue(conn, "'other', max_retries => 0")
    grandchild = enqueue(
        conn, "'both', dependencies => ARRAY[%(a)s, %(b)s]::bigint[]", {"a": child, "b": other}
    )
    fail(conn, root)
    retry = (RETRY_WITH_DEPENDENTS, {"id": root})
    failure = (FAILED_FOR_GOOD, {"id": other, "token": running(conn, other)})
    if retry_first:
        *_, waited = while_held(dsn, conn, retry, failure, "fail_attempts")
        cause = other
    else:
        *_, waited = while_held(dsn, conn, failure, retry, "retry_task")
        cause = root
    assert states(conn, root, child, other) == ["pending", "blocked", "failed"]
    assert waiting_or_cancelled(conn, grandchild) == ("cancelled", f"dependency {cause} failed")
    assert waited


def test_the_whole_subtree_runs_once_retried_from_python(conn, client, start_worker):
    root, child, grandchild = failed_chain(conn)
    outcome = client.retry_task(root, with_dependents=True)
    assert outcome["dependents"] == [child, grandchild]
    assert outcome["message"] == (
        f"task {root} is pending again (attempt 2 of 2); dependents {child}, {grandchild} "
        "wait for it again"
    )
    ran = lambda task: {"ran": task["task_type"]}  # noqa: E731
    start_worker({"root": ran, "child": ran, "grandchild": ran})
    assert client.wait_for_task(grandchild, timeout=DEADLINE)["result"] == {"ran": "grandchild"}


def test_the_retry_command_takes_with_dependents(conn, dsn, capsys):
    root, child, grandchild = failed_chain(conn)
    assert main(["retry", str(root), "--with-dependents", "--json", "--dsn", dsn]) == 0
    [outcome] = json.loads(capsys.readouterr().out)
    assert outcome["dependents"] == [child, grandchild]


def test_retry_refuses_what_is_not_failed_with_a_typed_error(conn):
    pending = enqueue(conn, "'t'")
    error = refused(conn, "SELECT * FROM omnispindle.retry_task(%s)", [pending])
    assert isinstance(error, TaskStateError)
    assert str(error) == f"task {pending} is pending; only failed tasks can be retried"


# --- liveness ------------------------------------------------------------------------------


def test_a_silent_worker_shows_as_lost_and_its_expired_lease_in_the_summary(conn, queue):
    """Finding 5: a SIGKILLed worker stayed ``active`` and its task ``running``."""
    worker_id = conn.execute(
        "INSERT INTO omnispindle.workers (name, host, pid, concurrency, version, "
        "lease_timeout_seconds, last_heartbeat_at) "
        "VALUES ('w1', 'h', 1, 1, 'v', 30, now() - interval '43 s') RETURNING id"
    ).fetchone()[0]
    task_id = enqueue(conn, "'t'")
    conn.execute(
        "UPDATE omnispindle.tasks SET state = 'running', attempts = 1, worker_id = %(w)s, "
        "started_at = now() - interval '43 s', lease_token = gen_random_uuid(), "
        "lease_expires_at = now() - interval '13 s' WHERE id = %(id)s",
        {"w": worker_id, "id": task_id},
    )
    [worker] = queue.list_workers()
    assert (worker["state"], worker["lost"]) == ("active", True)
    expired = conn.execute(
        "SELECT expired_leases, oldest_expired_lease_age > interval '12 s' "
        "FROM omnispindle.queue_summary"
    ).fetchone()
    assert expired == (1, True)


def test_status_says_when_workers_are_lost_and_nothing_sweeps(conn, dsn, capsys):
    conn.execute(
        "INSERT INTO omnispindle.workers (name, host, pid, concurrency, version, "
        "lease_timeout_seconds, last_heartbeat_at) "
        "VALUES ('w1', 'h', 1, 1, 'v', 30, now() - interval '43 s')"
    )
    task_id = enqueue(conn, "'t'")
    conn.execute(
        "UPDATE omnispindle.tasks SET state = 'running', attempts = 1, started_at = now(), "
        "lease_token = gen_random_uuid(), lease_expires_at = now() - interval '13 s' "
        "WHERE id = %(id)s",
        {"id": task_id},
    )
    assert main(["status", "--dsn", dsn]) == 0
    out = capsys.readouterr().out
    assert "lost" in out.split("Workers", 1)[1]
    assert "warning: worker w1 is lost: no heartbeat for 43 s, longer than its lease" in out
    assert (
        "warning: nothing is sweeping: 1 running tasks hold leases that expired up to 13 s" in out
    )
    assert main(["sweep", "--once", "--dead-worker-after", "30", "--dsn", dsn]) == 0
    capsys.readouterr()
    assert main(["status", "--json", "--dsn", dsn]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["warnings"] == []
    assert [w["state"] for w in report["workers"]] == ["dead"]


def test_no_warning_for_a_lease_the_sweeper_is_about_to_take():
    queues = [{"expired_leases": 1, "oldest_expired_lease_seconds": 2.0}]
    workers = [{"name": "w", "state": "active", "heartbeat_age_seconds": 1.0}]
    assert liveness_warnings(queues, workers) == []  # type: ignore[arg-type]


def test_a_lost_workers_name_cannot_send_escape_sequences_to_the_terminal(conn, dsn, capsys):
    conn.execute(
        "INSERT INTO omnispindle.workers (name, host, pid, concurrency, version, "
        "lease_timeout_seconds, last_heartbeat_at) "
        "VALUES (E'w\\x1b]0;owned\\x07\\x1b[2J\\nwarning: all fine', 'h', 1, 1, 'v', 30, "
        "now() - interval '43 s')"
    )
    assert main(["status", "--dsn", dsn]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out
    assert "warning: worker w\\x1b]0;owned\\x07\\x1b[2J\\nwarning: all fine is lost" in out
