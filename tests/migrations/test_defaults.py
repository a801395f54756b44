"""The schema's column defaults and ranges are the ones Python defines (``_core.defaults``).

Python's signatures and checks read the constants; plain SQL relies on the
columns' defaults, CHECK constraints and the rules ``tasks_check_request`` asks for.
This holds the two to one value each.
"""

from __future__ import annotations

import re

import psycopg

from omnispindle._core import defaults

COLUMN_DEFAULTS = """
SELECT table_name, column_name, column_default
FROM information_schema.columns
WHERE table_schema = 'omnispindle' AND table_name IN ('tasks', 'periodic_tasks')
  AND column_name IN ('priority', 'max_attempts', 'retry_backoff')
"""

CHECKS = """
SELECT conname, pg_get_constraintdef(oid)
FROM pg_constraint
WHERE connamespace = 'omnispindle'::regnamespace AND contype = 'c'
"""

# A task's request is checked by a function its trigger asks (see sql/schema.sql).
REQUEST_RULES = """
SELECT prosrc FROM pg_proc
WHERE pronamespace = 'omnispindle'::regnamespace AND proname = 'broken_request_rule'
"""


def number(text: str) -> float:
    return float(re.match(r"[-\d.]+", text.strip("()'")).group(0))


def test_column_defaults_are_the_python_defaults(dsn):
    with psycopg.connect(dsn) as conn:
        found = {(t, c): number(d) for t, c, d in conn.execute(COLUMN_DEFAULTS)}
    expected = {
        "priority": defaults.PRIORITY,
        "max_attempts": defaults.MAX_ATTEMPTS,
        "retry_backoff": defaults.RETRY_BACKOFF,
    }
    assert found == {
        (table, column): value
        for table in ("tasks", "periodic_tasks")
        for column, value in expected.items()
    }


def unquoted(text: str) -> str:
    """Negative numbers come back as quoted literals: '-1000'::integer."""
    return re.sub(r"'(-?\d+)'::integer", r"\1", text)


def test_check_constraints_and_request_rules_hold_the_python_ranges(dsn):
    with psycopg.connect(dsn) as conn:
        checks = {name: unquoted(text) for name, text in conn.execute(CHECKS)}
        request = unquoted(conn.execute(REQUEST_RULES).fetchone()[0])
    low, high = defaults.PRIORITY_RANGE
    least, most = defaults.MAX_ATTEMPTS_RANGE
    assert f"(priority >= {low})" in checks["periodic_tasks_priority_range"]
    assert f"(priority <= {high})" in checks["periodic_tasks_priority_range"]
    assert f"(max_attempts >= {least})" in checks["periodic_tasks_max_attempts_range"]
    assert f"(max_attempts <= {most})" in checks["periodic_tasks_max_attempts_range"]
    assert f"<= {defaults.MAX_TASK_TYPE_LENGTH}" in checks["periodic_tasks_task_type_valid"]
    assert f"<= {defaults.MAX_KEY_LENGTH}" in checks["periodic_tasks_name_valid"]
    assert f"p_priority OPERATOR(pg_catalog.>=) {low}\n" in request
    assert f"p_priority OPERATOR(pg_catalog.<=) {high})" in request
    assert f"p_max_attempts OPERATOR(pg_catalog.>=) {least}\n" in request
    assert f"p_max_attempts OPERATOR(pg_catalog.<=) {most})" in request
    length = "pg_catalog.length({}) OPERATOR(pg_catalog.<=) {})"
    assert length.format("p_task_type", defaults.MAX_TASK_TYPE_LENGTH) in request
    assert length.format("p_idempotency_key", defaults.MAX_KEY_LENGTH) in request


def test_a_task_inserted_by_plain_sql_takes_the_python_defaults(dsn):
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "INSERT INTO omnispindle.tasks (task_type, state) VALUES ('t', 'pending') "
            "RETURNING priority, max_attempts, retry_backoff"
        ).fetchone()
    assert row == (defaults.PRIORITY, defaults.MAX_ATTEMPTS, defaults.RETRY_BACKOFF)


ENQUEUE_DEFAULTS = """
SELECT pg_get_function_arguments('omnispindle.enqueue'::regproc)
"""


def test_enqueue_takes_the_python_defaults(dsn):
    """``omnispindle.enqueue`` spells the defaults out once more: hold them to Python's."""
    with psycopg.connect(dsn) as conn:
        arguments = conn.execute(ENQUEUE_DEFAULTS).fetchone()[0]
    found = {
        name: number(value)
        for name, value in re.findall(r"(\w+) \w[\w ]* DEFAULT (-?\d[\d.]*)", arguments)
    }
    assert found == {
        "priority": defaults.PRIORITY,
        "max_retries": defaults.MAX_RETRIES,
        "retry_backoff": defaults.RETRY_BACKOFF,
    }
    with psycopg.connect(dsn) as conn:
        body = conn.execute("SELECT prosrc FROM pg_proc WHERE proname = 'enqueue'").fetchone()[0]
    assert f"coalesce(enqueue.max_retries, {defaults.MAX_RETRIES})" in body
    assert f"coalesce(enqueue.priority, {defaults.PRIORITY})" in body
    assert f"coalesce(enqueue.retry_backoff, {defaults.RETRY_BACKOFF})" in body
