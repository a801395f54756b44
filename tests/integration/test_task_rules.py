"""The rules on what a task asks for and on what its attempts leave.

They are checked by the triggers ``tasks_check_request`` and
``tasks_check_outcome`` (see ``sql/schema.sql``), which only a statement that
writes one of their columns prepares, instead of CHECK constraints, which
every UPDATE statement prepared. A row that breaks one is refused as a CHECK
constraint refuses it: ``check_violation``, named by the rule, nothing written.
"""

from __future__ import annotations

import psycopg
import pytest

from tests.integration.rules import INSERT, assert_named, prepared, refused

# (rule, column, a value that breaks it)
BROKEN = [
    ("tasks_task_type_valid", "task_type", "''"),
    ("tasks_task_type_valid", "task_type", "repeat('t', 201)"),
    ("tasks_priority_range", "priority", "1001"),
    ("tasks_priority_range", "priority", "-1001"),
    ("tasks_max_attempts_range", "max_attempts", "0"),
    ("tasks_max_attempts_range", "max_attempts", "102"),
    ("tasks_retry_backoff_range", "retry_backoff", "-1"),
    ("tasks_retry_backoff_bounded", "retry_backoff", "3601"),
    ("tasks_timeout_positive", "timeout_seconds", "0"),
    ("tasks_timeout_bounded", "timeout_seconds", "1e10"),
    ("tasks_idempotency_key_valid", "idempotency_key", "''"),
    ("tasks_idempotency_key_valid", "idempotency_key", "repeat('k', 201)"),
    ("tasks_group_key_valid", "group_key", "''"),
    ("tasks_group_key_valid", "group_key", "repeat('g', 201)"),
    (
        "tasks_parameters_size",
        "parameters",
        "jsonb_build_object('x', repeat('y', 65 * 1024 * 1024))",
    ),
    (
        "tasks_required_capabilities_size",
        "required_capabilities",
        "array_fill('c'::text, ARRAY[1001])",
    ),
    # Names no worker can declare: the task would wait for ever.
    ("tasks_required_capabilities_valid", "required_capabilities", "ARRAY['gpu', '']"),
    ("tasks_required_capabilities_valid", "required_capabilities", "ARRAY['gpu', NULL]"),
    ("tasks_required_capabilities_valid", "required_capabilities", "ARRAY[repeat('c', 201)]"),
    ("tasks_result_size", "result", "to_jsonb(repeat('r', 65 * 1024 * 1024))"),
    ("tasks_errors_is_array", "errors", "'{}'::jsonb"),
    ("tasks_cancel_reason_bounded", "cancel_reason", "repeat('r', 1001)"),
    # Times a Python datetime cannot hold: the task's record could not be read.
    ("tasks_run_after_range", "run_after", "'infinity'"),
    ("tasks_run_after_range", "run_after", "'-infinity'"),
    ("tasks_run_after_range", "run_after", "'10000-01-01 00:00:00+00'"),
    ("tasks_run_after_range", "run_after", "'0001-12-31 23:59:59.999999+00 BC'"),
]

# The columns that claims, completions, failures and unblocking write with a
# task's state: every statement that moves a task on sets some of them.
STATE_COLUMNS = {"state", "attempts", "pending_dependencies"}

CHECK_COLUMNS = """
SELECT c.conname, array_agg(a.attname::text)
FROM pg_constraint c
JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = ANY (c.conkey)
WHERE c.conrelid = 'omnispindle.tasks'::regclass AND c.contype = 'c'
GROUP BY c.conname
"""

TRIGGER_COLUMNS = """
SELECT t.tgname, array_agg(a.attname::text)
FROM pg_trigger t
JOIN pg_attribute a ON a.attrelid = t.tgrelid AND a.attnum = ANY (t.tgattr)
WHERE t.tgrelid = 'omnispindle.tasks'::regclass
  AND t.tgname IN ('tasks_check_request', 'tasks_check_outcome')
GROUP BY t.tgname
"""


def count_tasks(conn: psycopg.Connection) -> int:
    return conn.execute("SELECT count(*) FROM omnispindle.tasks").fetchone()[0]


@pytest.mark.parametrize(("rule", "column", "value"), BROKEN)
def test_an_insert_that_breaks_a_rule_is_refused_by_its_name(conn, rule, column, value):
    columns = "task_type" if column == "task_type" else f"task_type, {column}"
    values = value if column == "task_type" else f"'t', {value}"
    error = refused(conn, f"INSERT INTO omnispindle.tasks ({columns}) VALUES ({values})")
    assert_named(error, rule)
    assert count_tasks(conn) == 0


@pytest.mark.parametrize(("rule", "column", "value"), BROKEN)
def test_an_update_that_writes_a_broken_value_is_refused_by_its_name(conn, rule, column, value):
    task_id = conn.execute(
        "INSERT INTO omnispindle.tasks (task_type) VALUES ('t') RETURNING id"
    ).fetchone()[0]
    before = conn.execute("SELECT * FROM omnispindle.tasks WHERE id = %s", [task_id]).fetchone()
    error = refused(conn, f"UPDATE omnispindle.tasks SET {column} = {value} WHERE id = {task_id}")
    assert_named(error, rule)
    after = conn.execute("SELECT * FROM omnispindle.tasks WHERE id = %s", [task_id]).fetchone()
    assert after == before


def test_a_row_breaking_several_rules_is_refused_by_the_first(conn):
    error = refused(
        conn,
        "INSERT INTO omnispindle.tasks (task_type, priority, errors) VALUES ('', 5000, '{}')",
    )
    assert_named(error, "tasks_task_type_valid")


def test_values_at_the_bounds_are_taken(conn):
    """The WHEN clause is no stricter than the rules it replaced: each bound is allowed."""
    for values in (
        "repeat('t', 200), 1000, 101, 3600, 1e9, repeat('k', 200), repeat('g', 200)",
        "'t', -1000, 1, 0, 0.001, 'k', 'g'",
    ):
        conn.execute(
            "INSERT INTO omnispindle.tasks (task_type, priority, max_attempts, retry_backoff, "
            f"timeout_seconds, idempotency_key, group_key) VALUES ({values})"
        )
    conn.execute(
        "UPDATE omnispindle.tasks SET errors = '[]', cancel_reason = repeat('r', 1000), "
        "required_capabilities = array_fill(repeat('c', 200), ARRAY[1000])"
    )
    assert count_tasks(conn) == 2


def test_a_run_after_at_the_ends_of_the_calendar_is_taken_and_read_back(conn):
    first, last = "0001-01-01 00:00:00+00", "9999-12-31 23:59:59.999999+00"
    conn.execute(
        "INSERT INTO omnispindle.tasks (task_type, run_after) VALUES ('t', %s), ('t', %s)",
        [first, last],
    )
    read = conn.execute("SELECT run_after FROM omnispindle.tasks ORDER BY run_after").fetchall()
    assert [row[0].year for row in read] == [1, 9999]


def test_a_run_after_stored_before_its_rule_does_not_stop_a_parent_completing(conn):
    """Unblocking writes run_after again (at least now): a dependent's time from
    before the rule, left as it was, is let be, and its parent's completion stands."""
    parent = conn.execute("SELECT omnispindle.enqueue('t')").fetchone()[0]
    child = conn.execute(
        "SELECT omnispindle.enqueue('later', dependencies => ARRAY[%s]::bigint[])", [parent]
    ).fetchone()[0]
    conn.execute("ALTER TABLE omnispindle.tasks DISABLE TRIGGER tasks_check_run_after")
    conn.execute("UPDATE omnispindle.tasks SET run_after = 'infinity' WHERE id = %s", [child])
    conn.execute("ALTER TABLE omnispindle.tasks ENABLE TRIGGER tasks_check_run_after")
    claimed = conn.execute(
        "SELECT id, lease_token FROM omnispindle.claim_tasks('{t}', '{}', 1, gen_random_uuid(), 30)"
    ).fetchall()
    assert [row[0] for row in claimed] == [parent]
    conn.execute(
        "SELECT omnispindle.complete_attempts(%s, %s, %s)", [[parent], [claimed[0][1]], ["{}"]]
    )
    row = conn.execute(
        "SELECT state::text, run_after::text FROM omnispindle.tasks WHERE id = %s", [child]
    ).fetchone()
    assert row == ("pending", "infinity")


def test_a_rule_about_a_missing_value_holds(conn):
    """As in a CHECK constraint, a rule that comes out NULL holds: no key, no group,
    no timeout, no result are all allowed."""
    row = conn.execute(
        "INSERT INTO omnispindle.tasks (task_type, idempotency_key, group_key, timeout_seconds, "
        "result, cancel_reason) VALUES ('t', NULL, NULL, NULL, NULL, NULL) RETURNING task_type"
    ).fetchone()
    assert row == ("t",)


def test_tasks_has_no_check_constraint(conn):
    """A CHECK constraint is prepared by every UPDATE statement on tasks, also by
    the claims and completions that never write the columns it reads: every rule
    on a task is a trigger's (see also test_state_rules)."""
    assert dict(conn.execute(CHECK_COLUMNS).fetchall()) == {}


def test_the_rules_triggers_list_no_column_a_state_change_writes(conn):
    """A claim, completion or unblocking prepares neither trigger: none of their
    columns is one that moving a task on writes."""
    moved_on = STATE_COLUMNS | {
        "worker_id",
        "lease_token",
        "lease_expires_at",
        "started_at",
        "finished_at",
        "run_after",
    }
    columns = dict(conn.execute(TRIGGER_COLUMNS).fetchall())
    assert set(columns) == {"tasks_check_request", "tasks_check_outcome"}
    assert all(not moved_on & set(listed) for listed in columns.values())


def test_what_an_insert_prepares_is_small(conn):
    """Every insert, a single submit's too, prepares the rules its triggers fire:
    as calls of the functions that hold them, not as the rules written out
    (12,803 characters of node text when the request's rules were)."""
    assert prepared(conn, INSERT) < 6000
