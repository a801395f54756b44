"""A worker's step counts down the children of the tasks it finished while another
session changes them: what that session commits first wins, and the step neither
fails nor undoes it."""

from __future__ import annotations

import threading

import psycopg

from ..acceptance.workers import poll
from .test_fast_paths import claim, complete_and_claim

STATES = "SELECT id, state::text FROM omnispindle.tasks ORDER BY id"
WAITING_FOR_A_LOCK = (
    "SELECT count(*) FROM pg_stat_activity "
    "WHERE datname = current_database() AND wait_event_type = 'Lock'"
)


def claims_of(rows) -> list:
    """A step's claims, without the results it dropped."""
    return [row for row in rows if not row["dropped"]]


def states(conn) -> list[str]:
    return [state for _id, state in conn.execute(STATES).fetchall()]


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
        stepping = threading.Thread(
            target=lambda: stepped.append(claims_of(complete_and_claim(conn, running, 1)))
        )
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
    waits for that parent again, and the step claims the parent."""
    other = client.submit_task("job")
    running = claim(conn)
    failed = conn.execute(
        "INSERT INTO omnispindle.tasks (task_type, state, attempts, max_attempts, errors, "
        "finished_at) VALUES ('job', 'failed', 1, 2, '[{\"message\": \"x\"}]', now()) "
        "RETURNING id"
    ).fetchone()[0]
    child = blocked_child(conn, [failed, other], pending=1)
    retry = "SELECT * FROM omnispindle.retry_task(%s)"
    claimed = step_racing(dsn, conn, running, lambda c: c.execute(retry, [failed]))
    assert [r["id"] for r in claimed] == [failed]
    assert conn.execute(
        "SELECT state::text, pending_dependencies FROM omnispindle.tasks WHERE id = %s", [child]
    ).fetchone() == ("blocked", 1)


def test_a_child_cancelled_while_a_step_finishes_its_parent_stays_cancelled(client, conn, dsn):
    """The countdown used to set a child cancelled meanwhile back to pending, which
    the transition rule refused (IllegalTransitionError): the step failed, and the
    worker loop, which rides out database errors but not that one, stopped."""
    parent = client.submit_task("job")
    running = claim(conn)
    child = blocked_child(conn, [parent], pending=1)
    cancel = "SELECT * FROM omnispindle.cancel_task(%s, 'no longer needed')"
    assert step_racing(dsn, conn, running, lambda c: c.execute(cancel, [child])) == []
    assert states(conn) == ["succeeded", "cancelled"]
