"""Tasks due later: marked when written to start more than ten seconds ahead, kept
out of the index that the claims of limited, aging and fair types (and one-type
walks) read from the top, and cleared by the first claim that finds them due."""

from __future__ import annotations

import psycopg
import pytest

from .test_fast_paths import claim as claim_as_new_worker
from .test_type_limits import xact_tasks_fetched

DAY = 86_400
DUE_LATER = 2_000  # tasks due the next day, ahead of the ready ones in every index order
MODES = ("strict", "limits", "aging", "fair")


def set_mode(client, mode: str) -> None:
    """Give the type "work" the mode's limits or strategy ("strict": none)."""
    if mode == "limits":
        client.set_task_type_limit("work", max_running=100)
    elif mode == "aging":
        client.set_task_type_strategy("work", "aging", aging_seconds=1000)
    elif mode == "fair":
        client.set_task_type_strategy("work", "fair")


def group(mode: str) -> dict:
    """Fair share's tasks go in a group; the others have none (the usual case)."""
    return {"group_key": "tenant"} if mode == "fair" else {}


def claim(connection, limit: int = 10) -> list[int]:
    """The ids of the tasks of "work" one claim by a fresh worker id took."""
    return [row["id"] for row in claim_as_new_worker(connection, limit, task_type="work")]


@pytest.mark.parametrize("mode", MODES)
def test_a_claim_steps_over_none_of_the_tasks_due_later_ahead_of_the_ready_ones(
    client, dsn, conn, mode
):
    """Each claim read every task of the type (or group) not yet due ahead of the
    ready ones in the index's order: 2,000 rows for a claim of 3."""
    set_mode(client, mode)
    client.submit_batch([{"task_type": "work", "delay": DAY, **group(mode)}] * DUE_LATER)
    ready = client.submit_batch([{"task_type": "work", **group(mode)}] * 3)
    conn.execute("ANALYZE omnispindle.tasks")
    with psycopg.connect(dsn) as fresh:  # one transaction: its own statistics
        claimed = claim(fresh)
        fetched = xact_tasks_fetched(fresh)
    assert sorted(claimed) == ready
    assert fetched < 100, fetched


def due_later(conn, ids) -> list[bool]:
    rows = conn.execute(
        "SELECT due_later FROM omnispindle.tasks WHERE id = ANY (%s) ORDER BY id", [list(ids)]
    ).fetchall()
    return [row[0] for row in rows]


def test_only_a_task_due_more_than_ten_seconds_later_is_marked_by_every_way_in(client, conn):
    marked = [
        client.submit_task("work", delay=60),
        client.submit_batch([{"task_type": "work", "delay": 60}])[0],
        conn.execute("SELECT omnispindle.enqueue('work', delay => '1 minute')").fetchone()[0],
        conn.execute(
            "INSERT INTO omnispindle.tasks (task_type, run_after) "
            "VALUES ('work', now() + interval '1 minute') RETURNING id"
        ).fetchone()[0],
    ]
    unmarked = [
        client.submit_task("work"),
        client.submit_task("work", delay=5),
        client.submit_batch([{"task_type": "work", "delay": 5}])[0],
    ]
    assert due_later(conn, marked) == [True] * 4
    assert due_later(conn, unmarked) == [False] * 3


def test_a_retry_waiting_out_a_long_backoff_is_marked(client, conn):
    task_id = client.submit_task("work", retry_backoff=120)
    assert claim(conn) == [task_id]
    conn.execute(
        "SELECT omnispindle.fail_attempts(array_agg(id), array_agg(lease_token), "
        'array_agg(\'{"error": "boom"}\'::jsonb)) FROM omnispindle.tasks WHERE id = %s',
        [task_id],
    )
    assert conn.execute(
        "SELECT state, due_later FROM omnispindle.tasks WHERE id = %s", [task_id]
    ).fetchone() == ("pending", True)


@pytest.mark.parametrize("mode", MODES)
def test_a_claim_takes_a_task_due_later_once_it_comes_due(client, conn, mode):
    """Moved by hand to start now, a task still marked is cleared by the next
    claim and taken in its priority order among the ready ones."""
    set_mode(client, mode)
    later = client.submit_task("work", delay=DAY, priority=5, **group(mode))
    assert claim(conn) == []
    conn.execute("UPDATE omnispindle.tasks SET run_after = now() WHERE id = %s", [later])
    client.submit_task("work", priority=1, **group(mode))
    assert due_later(conn, [later]) == [True]
    assert claim(conn, limit=1) == [later]
    assert conn.execute(
        "SELECT state, due_later FROM omnispindle.tasks WHERE id = %s", [later]
    ).fetchone() == ("running", False)


def test_a_claim_passes_over_the_tasks_another_claim_is_clearing(client, dsn, conn):
    """Two claims finding the same tasks due: the second neither waits for the
    first's locks nor takes the tasks it holds, and takes them once it commits."""
    client.set_task_type_strategy("work", "fair")
    ids = client.submit_batch([{"task_type": "work", "delay": DAY}] * 3)
    conn.execute("UPDATE omnispindle.tasks SET run_after = now() WHERE id = ANY (%s)", [ids])
    with psycopg.connect(dsn) as first:
        first.execute("SELECT omnispindle.promote_due_tasks('{work}', 10)")
        with psycopg.connect(dsn) as second:
            second.execute("SET lock_timeout = '2s'")
            assert claim(second) == []
            second.rollback()
            first.commit()
            claimed = claim(second)
    assert sorted(claimed) == ids


def come_due(client, conn, count: int) -> list[int]:
    """``count`` tasks of "work" submitted due the next day, then moved to now."""
    ids = client.submit_batch([{"task_type": "work", "delay": DAY}] * count)
    conn.execute("UPDATE omnispindle.tasks SET run_after = now() WHERE id = ANY (%s)", [ids])
    return ids


def cleared(conn) -> int:
    return conn.execute(
        "SELECT count(*) FROM omnispindle.tasks WHERE state = 'pending' AND NOT due_later"
    ).fetchone()[0]


def test_a_claim_clears_a_thousand_come_due_and_wakes_the_others_for_the_rest(
    client, conn, ready_notices
):
    """Clearing every task come due in one claim held the other workers' claims
    off all of them until it committed; the ones it cleared and left waited for
    their poll when nothing woke them."""
    come_due(client, conn, 2500)
    assert ready_notices(lambda: claim(conn)) == [""]
    assert cleared(conn) == 1000 - 10
    assert ready_notices(lambda: claim(conn)) == [""]
    assert cleared(conn) == 2000 - 20


def test_a_claim_that_takes_all_it_cleared_wakes_nobody(client, conn, ready_notices):
    come_due(client, conn, 5)
    assert ready_notices(lambda: claim(conn)) == []
    assert cleared(conn) == 0


@pytest.mark.slow  # the task is due 11 s later
def test_a_worker_of_a_fair_type_starts_a_delayed_task_on_time(client, start_worker):
    """Woken by the notice of its due time, a worker's claim clears the mark and
    starts the task: the worker's poll interval (30 s) plays no part."""
    client.set_task_type_strategy("work", "fair")
    start_worker({"work": lambda task: {}}, poll_interval=30)
    task_id = client.submit_task("work", delay=11, group_key="tenant")
    task = client.wait_for_task(task_id, timeout=20)
    waited = (task["started_at"] - task["run_after"]).total_seconds()
    assert 0 <= waited < 1.0, waited


def test_a_mark_cleared_before_its_time_leaves_the_task_waiting_for_its_time(client, conn):
    """The mark only says which index holds the task: cleared by hand early, the
    task is stepped over as one due sooner is, and taken once due."""
    task_id = client.submit_task("work", delay=DAY)
    conn.execute("UPDATE omnispindle.tasks SET due_later = false WHERE id = %s", [task_id])
    assert claim(conn) == []
    conn.execute("UPDATE omnispindle.tasks SET run_after = now() WHERE id = %s", [task_id])
    assert claim(conn) == [task_id]
