"""The rules that tie a task's state to its other columns, and the transition rule.

``tasks_state_rules`` and ``tasks_check_transition`` (see ``sql/schema.sql``)
ask a function each, for the rows an insert or update writes, instead of
expressions that every UPDATE statement on tasks prepared again. A row that
breaks a state rule is refused as a CHECK constraint refuses it:
``check_violation``, named by the rule, nothing written.
"""

from __future__ import annotations

import psycopg
import pytest

from omnispindle._db.sqlstate import translate
from omnispindle.errors import IllegalTransitionError
from tests.integration.rules import UPDATE, assert_named, prepared, refused

LEASE = "lease_token = gen_random_uuid(), lease_expires_at = now() + interval '1 hour'"
RUNNING = (
    "INSERT INTO omnispindle.tasks (task_type, state, attempts, started_at, lease_token, "
    "lease_expires_at) VALUES ('t', 'running', 1, now(), gen_random_uuid(), "
    "now() + interval '1 hour') RETURNING id"
)
PENDING = "INSERT INTO omnispindle.tasks (task_type) VALUES ('t') RETURNING id"

# (rule, columns and values of an insert that breaks it, and it first)
BROKEN_INSERTS = [
    ("tasks_attempts_range", "attempts", "-1"),
    ("tasks_pending_dependencies_range", "pending_dependencies", "-1"),
    ("tasks_blocked_has_dependencies", "state", "'blocked'"),
    ("tasks_lease_matches_state", "lease_token", "gen_random_uuid()"),
    (
        "tasks_running_has_start",
        "state, attempts, lease_token, lease_expires_at",
        "'running', 1, gen_random_uuid(), now() + interval '1 hour'",
    ),
    ("tasks_finished_at_matches_state", "finished_at", "now()"),
    ("tasks_succeeded_has_result", "state, finished_at", "'succeeded', now()"),
    ("tasks_failed_has_error", "state, finished_at", "'failed', now()"),
    ("tasks_cancel_request_matches_state", "cancel_requested_at", "now()"),
    ("tasks_waiting_has_attempt_left", "attempts", "4"),
]

# (rule, the row updated, an assignment that breaks the rule, and it first)
BROKEN_UPDATES = [
    ("tasks_attempts_range", PENDING, "attempts = -1"),
    ("tasks_pending_dependencies_range", PENDING, "pending_dependencies = -1"),
    ("tasks_blocked_has_dependencies", PENDING, "pending_dependencies = 1"),
    ("tasks_lease_matches_state", PENDING, "lease_token = gen_random_uuid()"),
    ("tasks_lease_matches_state", RUNNING, "lease_expires_at = NULL"),
    ("tasks_running_has_start", PENDING, f"state = 'running', attempts = 1, {LEASE}"),
    ("tasks_finished_at_matches_state", PENDING, "finished_at = now()"),
    (
        "tasks_succeeded_has_result",
        RUNNING,
        "state = 'succeeded', finished_at = now(), lease_token = NULL, lease_expires_at = NULL",
    ),
    (
        "tasks_failed_has_error",
        RUNNING,
        "state = 'failed', finished_at = now(), lease_token = NULL, lease_expires_at = NULL",
    ),
    ("tasks_cancel_request_matches_state", PENDING, "cancel_requested_at = now()"),
    ("tasks_waiting_has_attempt_left", PENDING, "attempts = 4"),
]

# The columns a claim, a completion or an unblocking writes.
MOVED_ON = {
    "state",
    "attempts",
    "pending_dependencies",
    "worker_id",
    "lease_token",
    "lease_expires_at",
    "started_at",
    "finished_at",
    "run_after",
    "result",
}


def rows(conn: psycopg.Connection) -> list[tuple]:
    return conn.execute("SELECT * FROM omnispindle.tasks ORDER BY id").fetchall()


@pytest.mark.parametrize(("rule", "columns", "values"), BROKEN_INSERTS)
def test_an_insert_that_breaks_a_state_rule_is_refused_by_its_name(conn, rule, columns, values):
    error = refused(
        conn, f"INSERT INTO omnispindle.tasks (task_type, {columns}) VALUES ('t', {values})"
    )
    assert_named(error, rule)
    assert rows(conn) == []


@pytest.mark.parametrize(("rule", "row", "assignment"), BROKEN_UPDATES)
def test_an_update_that_breaks_a_state_rule_is_refused_by_its_name(conn, rule, row, assignment):
    task_id = conn.execute(row).fetchone()[0]
    before = rows(conn)
    error = refused(conn, f"UPDATE omnispindle.tasks SET {assignment} WHERE id = {task_id}")
    assert_named(error, rule)
    assert rows(conn) == before


def test_an_illegal_transition_is_refused_as_one_before_the_state_rules(conn):
    """A pending task set to succeeded breaks two state rules too; the transition
    rule speaks first, as it did before the CHECK constraints."""
    task_id = conn.execute(PENDING).fetchone()[0]
    with pytest.raises(psycopg.Error) as raised:
        conn.execute(f"UPDATE omnispindle.tasks SET state = 'succeeded' WHERE id = {task_id}")
    assert raised.value.sqlstate == "OS002"
    assert isinstance(translate(raised.value), IllegalTransitionError)


def test_an_update_of_other_columns_leaves_a_row_written_before_a_rule_alone(conn):
    """The rules are checked when a column they read is written: a row written
    before a rule and breaking it (one that waits without an attempt left, from
    before 0007) may still get a new priority. (The NOT VALID constraint
    refused any update of such a row.)"""
    task_id = conn.execute(PENDING).fetchone()[0]
    conn.execute("ALTER TABLE omnispindle.tasks DISABLE TRIGGER tasks_state_rules")
    conn.execute(f"UPDATE omnispindle.tasks SET attempts = 4 WHERE id = {task_id}")
    conn.execute("ALTER TABLE omnispindle.tasks ENABLE TRIGGER tasks_state_rules")
    conn.execute(f"UPDATE omnispindle.tasks SET priority = 5 WHERE id = {task_id}")
    assert refused(conn, f"UPDATE omnispindle.tasks SET attempts = 4 WHERE id = {task_id}")


def test_a_worker_role_claims_and_completes_under_the_rules(conn, dsn):
    """The functions the WHEN clauses call run as the writer: a role granted
    only a worker's access may call them."""
    conn.execute("DROP ROLE IF EXISTS rules_worker")
    conn.execute("CREATE ROLE rules_worker LOGIN")
    try:
        conn.execute("SELECT omnispindle.grant_access('rules_worker', 'worker')")
        task_id = conn.execute(PENDING).fetchone()[0]
        with psycopg.connect(dsn, user="rules_worker", autocommit=True) as worker:
            claimed = worker.execute(
                "SELECT id, lease_token FROM omnispindle.claim_tasks('{t}', '{t}', 1, "
                "gen_random_uuid(), 30)"
            ).fetchall()
            assert [row[0] for row in claimed] == [task_id]
            stored = worker.execute(
                "SELECT id, state FROM omnispindle.complete_attempts(%s, %s, %s)",
                [[task_id], [claimed[0][1]], ["{}"]],
            ).fetchall()
        assert [(row[0], str(row[1])) for row in stored] == [(task_id, "succeeded")]
    finally:
        conn.execute("DROP OWNED BY rules_worker")
        conn.execute("DROP ROLE rules_worker")


def test_what_a_state_change_prepares_is_small(conn):
    """Postgres prepares a table's CHECK constraints, and the WHEN clauses of the
    triggers a statement fires, again for every statement: the rules a claim or
    a completion fires are calls, not expressions written out (21,200
    characters of node text when they were)."""
    assert prepared(conn, UPDATE, MOVED_ON) < 6000


# A writer's own objects that would pass a row breaking a rule, if the rules
# looked them up by its search_path.
SHORT_TEXTS = ["CREATE FUNCTION hijack.length(text) RETURNS integer LANGUAGE sql AS 'SELECT 1'"]
EQUAL_STATES = [
    (
        "CREATE FUNCTION hijack.same(omnispindle.task_state, omnispindle.task_state) "
        "RETURNS boolean LANGUAGE sql AS 'SELECT true'"
    ),
    (
        "CREATE OPERATOR hijack.= (LEFTARG = omnispindle.task_state, "
        "RIGHTARG = omnispindle.task_state, FUNCTION = hijack.same)"
    ),
]
INTEGERS_IN_RANGE = [
    "CREATE FUNCTION hijack.fits(integer, integer) RETURNS boolean LANGUAGE sql AS 'SELECT true'",
    "CREATE OPERATOR hijack.<= (LEFTARG = integer, RIGHTARG = integer, FUNCTION = hijack.fits)",
    "CREATE OPERATOR hijack.>= (LEFTARG = integer, RIGHTARG = integer, FUNCTION = hijack.fits)",
]


@pytest.mark.parametrize("search_path", ["hijack, pg_catalog", "pg_catalog, hijack"])
@pytest.mark.parametrize(
    ("rule", "hijacks", "columns", "values"),
    [
        ("tasks_task_type_valid", SHORT_TEXTS, "task_type", "repeat('x', 300)"),
        ("tasks_priority_range", INTEGERS_IN_RANGE, "task_type, priority", "'t', 5000"),
        ("tasks_attempts_range", INTEGERS_IN_RANGE, "task_type, attempts", "'t', 9"),
        ("tasks_lease_matches_state", EQUAL_STATES, "task_type, state", "'t', 'running'"),
    ],
)
def test_a_writer_cannot_redirect_the_rules_through_its_search_path(
    conn, dsn, search_path, rule, hijacks, columns, values
):
    """The functions the rules live in run as the writer, with its search_path:
    each operator and function in them is pg_catalog's by name, so that one of
    the writer's own (an exact match on the enum beats pg_catalog's even when
    pg_catalog comes first) cannot let a row that breaks a rule through, nor
    have another rule named."""
    conn.execute("DROP ROLE IF EXISTS rules_hijacker")
    conn.execute("CREATE ROLE rules_hijacker LOGIN")
    try:
        conn.execute("SELECT omnispindle.grant_access('rules_hijacker', 'producer')")
        conn.execute("GRANT INSERT ON omnispindle.tasks TO rules_hijacker")
        conn.execute("CREATE SCHEMA hijack AUTHORIZATION rules_hijacker")
        with psycopg.connect(dsn, user="rules_hijacker", autocommit=True) as writer:
            for statement in hijacks:
                writer.execute(statement)
            writer.execute(f"SET search_path = {search_path}")
            error = refused(
                writer,
                f"INSERT INTO omnispindle.tasks ({columns}) VALUES ({values})",
            )
        assert error.diag.constraint_name == rule
        assert rows(conn) == []
    finally:
        conn.execute("DROP SCHEMA IF EXISTS hijack CASCADE")
        conn.execute("DROP OWNED BY rules_hijacker")
        conn.execute("DROP ROLE rules_hijacker")
