"""The state machine: Python's enums mirror the database's, and the database
refuses illegal states and transitions even from plain SQL."""

from __future__ import annotations

import psycopg
import pytest

from omnispindle._db.sqlstate import translate
from omnispindle.errors import IllegalTransitionError, ValidationError
from omnispindle.states import TaskState, WorkerState

INSERT_SUCCEEDED = """
INSERT INTO omnispindle.tasks (task_type, state, result, finished_at)
VALUES ('email', 'succeeded', '{"sent": true}', now())
RETURNING id
"""

INSERT_PENDING = """
INSERT INTO omnispindle.tasks (task_type, state) VALUES ('email', 'pending') RETURNING id
"""

BACK_TO_PENDING = """
UPDATE omnispindle.tasks SET state = 'pending', result = NULL, finished_at = NULL
WHERE id = %(id)s
"""

RUNNING_WITHOUT_LEASE = """
UPDATE omnispindle.tasks SET state = 'running', attempts = 1, started_at = now()
WHERE id = %(id)s
"""

TASK_STATE = "SELECT state::text, result FROM omnispindle.tasks WHERE id = %(id)s"


def insert(conn: psycopg.Connection, statement: str) -> int:
    return conn.execute(statement).fetchone()[0]


def task_state(conn: psycopg.Connection, task_id: int) -> tuple:
    return conn.execute(TASK_STATE, {"id": task_id}).fetchone()


@pytest.mark.smoke
@pytest.mark.parametrize(
    ("python_enum", "statement"),
    [
        (TaskState, "SELECT enum_range(NULL::omnispindle.task_state)::text[]"),
        (WorkerState, "SELECT enum_range(NULL::omnispindle.worker_state)::text[]"),
    ],
    ids=["task_state", "worker_state"],
)
def test_python_enums_mirror_database_enums(conn, python_enum, statement):
    database_labels = conn.execute(statement).fetchone()[0]
    assert [member.value for member in python_enum] == database_labels


@pytest.mark.smoke
def test_illegal_transition_in_plain_sql_is_refused(conn):
    task_id = insert(conn, INSERT_SUCCEEDED)
    with pytest.raises(psycopg.Error) as refused:
        conn.execute(BACK_TO_PENDING, {"id": task_id})
    assert refused.value.sqlstate == "OS002"
    assert isinstance(translate(refused.value), IllegalTransitionError)
    assert task_state(conn, task_id) == ("succeeded", {"sent": True})


@pytest.mark.smoke
def test_running_without_lease_violates_a_check(conn):
    task_id = insert(conn, INSERT_PENDING)
    with pytest.raises(psycopg.errors.CheckViolation) as refused:
        conn.execute(RUNNING_WITHOUT_LEASE, {"id": task_id})
    assert refused.value.diag.constraint_name == "tasks_lease_matches_state"
    translated = translate(refused.value)
    assert isinstance(translated, ValidationError)
    assert "tasks_lease_matches_state" in str(translated)
    assert task_state(conn, task_id) == ("pending", None)


# One row in each state, keeping every state rule.
ROW_IN_STATE = {
    "blocked": "INSERT INTO omnispindle.tasks (task_type, state, pending_dependencies) "
    "VALUES ('t', 'blocked', 1) RETURNING id",
    "pending": (
        "INSERT INTO omnispindle.tasks (task_type, state) VALUES ('t', 'pending') RETURNING id"
    ),
    "running": "INSERT INTO omnispindle.tasks "
    "(task_type, state, attempts, started_at, lease_token, lease_expires_at) "
    "VALUES ('t', 'running', 1, now(), gen_random_uuid(), now() + interval '1 hour') RETURNING id",
    "succeeded": "INSERT INTO omnispindle.tasks (task_type, state, result, finished_at) "
    "VALUES ('t', 'succeeded', '{}', now()) RETURNING id",
    "failed": "INSERT INTO omnispindle.tasks (task_type, state, attempts, errors, finished_at) "
    "VALUES ('t', 'failed', 1, '[{\"message\": \"x\"}]', now()) RETURNING id",
    "cancelled": "INSERT INTO omnispindle.tasks (task_type, state, finished_at) "
    "VALUES ('t', 'cancelled', now()) RETURNING id",
}

LEGAL = {
    "blocked": {"pending", "cancelled"},
    "pending": {"running", "cancelled"},
    "running": {"pending", "succeeded", "failed", "cancelled"},
    "failed": {"pending"},
}


@pytest.mark.parametrize("source", list(ROW_IN_STATE))
def test_every_transition_is_refused_unless_legal(conn, source):
    """Each state change either passes the transition rule (and may still break
    a state rule, which the transition rule runs before) or is refused with OS002."""
    for target in ROW_IN_STATE:
        task_id = insert(conn, ROW_IN_STATE[source])
        try:
            conn.execute(
                "UPDATE omnispindle.tasks SET state = %(state)s WHERE id = %(id)s",
                {"state": target, "id": task_id},
            )
            refused = None
        except psycopg.Error as error:
            refused = error.sqlstate
        legal = target == source or target in LEGAL.get(source, set())
        assert (refused == "OS002") != legal, f"{source} -> {target}: {refused}"


def test_failed_task_without_attempts_left_cannot_go_back_to_pending(conn):
    task_id = conn.execute(
        "INSERT INTO omnispindle.tasks "
        "(task_type, state, attempts, max_attempts, errors, finished_at) "
        "VALUES ('t', 'failed', 2, 2, '[{\"message\": \"x\"}]', now()) RETURNING id"
    ).fetchone()[0]
    with pytest.raises(psycopg.Error) as refused:
        conn.execute(BACK_TO_PENDING, {"id": task_id})
    assert refused.value.sqlstate == "OS002"
