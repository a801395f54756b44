"""Retention: old finished tasks are pruned in bounded batches, the rest is kept."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from omnispindle import (
    AsyncTaskQueueClient,
    TaskNotFoundError,
    ValidationError,
    WorkerClient,
    current_task,
)
from omnispindle._db import queries as q
from omnispindle._db.pool import execute
from omnispindle._maintenance import retention
from omnispindle._maintenance.sweeper import PRUNE_BACKLOG_PAUSE, Sweeper, SweeperConfig
from omnispindle.cli.main import main

from ..acceptance.workers import poll

HOUR = 3600.0
DEADLINE = 30

# Finished tasks made directly, the oldest first (task g finished g seconds
# before task g + 1); an age moves them all back.
FINISHED = """
INSERT INTO omnispindle.tasks (task_type, state, result, errors, finished_at)
SELECT 'job', %(state)s::omnispindle.task_state,
       CASE WHEN %(state)s = 'succeeded' THEN jsonb_build_object('n', g) END,
       CASE WHEN %(state)s = 'failed' THEN '[{"type": "Boom"}]'::jsonb ELSE '[]'::jsonb END,
       now() - %(age)s::interval - (%(count)s - g) * interval '1 second'
FROM generate_series(1, %(count)s) AS g
ORDER BY g
RETURNING id
"""


def finished_tasks(
    conn, count: int, *, state: str = "succeeded", age: str = "2 hours"
) -> list[int]:
    rows = conn.execute(FINISHED, {"state": state, "age": age, "count": count}).fetchall()
    return sorted(row[0] for row in rows)


def make_old(conn, ids: list[int], age: str = "2 hours") -> None:
    conn.execute(
        "UPDATE omnispindle.tasks SET finished_at = now() - %s::interval WHERE id = ANY (%s)",
        [age, ids],
    )


def existing(conn, ids: list[int]) -> list[int]:
    rows = conn.execute("SELECT id FROM omnispindle.tasks WHERE id = ANY (%s) ORDER BY id", [ids])
    return [row[0] for row in rows]


def count(conn, table: str) -> int:
    return conn.execute(f"SELECT count(*) FROM omnispindle.{table}").fetchone()[0]


def within_deadline(fn):
    """fn()'s result; fails if it waits (on a lock) instead of returning."""
    pool = ThreadPoolExecutor(max_workers=1)
    try:
        return pool.submit(fn).result(timeout=DEADLINE)
    finally:
        pool.shutdown(wait=False)  # a call stuck on a lock ends when the test lets go of it


def test_a_batch_removes_at_most_its_limit_oldest_first(queue, conn):
    ids = finished_tasks(conn, 25)
    assert retention.prune_batch(queue.db, HOUR, 10) == 10
    assert existing(conn, ids) == ids[10:]
    assert queue.prune(HOUR, batch_size=10) == 15
    assert existing(conn, ids) == []
    assert queue.prune(HOUR) == 0


def test_recent_and_unfinished_tasks_are_kept(client, queue, conn):
    old = (
        finished_tasks(conn, 3)
        + finished_tasks(conn, 2, state="failed")
        + finished_tasks(conn, 2, state="cancelled")
    )
    recent = finished_tasks(conn, 3, age="10 minutes")
    pending = client.submit_task("job")
    blocked = client.submit_task("job", dependencies=[pending])
    running = client.submit_task("job")
    conn.execute(
        "UPDATE omnispindle.tasks SET state = 'running', attempts = 1, started_at = now(),"
        " worker_id = gen_random_uuid(), lease_token = gen_random_uuid(),"
        " lease_expires_at = now() + interval '1 minute' WHERE id = %s",
        [running],
    )
    assert retention.count_prunable(queue.db, HOUR) == len(old)
    assert queue.prune(HOUR) == len(old)
    assert existing(conn, old) == []
    assert existing(conn, recent + [pending, blocked, running]) == sorted(
        recent + [pending, blocked, running]
    )


def test_a_finished_parent_is_kept_while_a_child_may_still_need_it(
    client, queue, conn, start_worker
):
    parent = finished_tasks(conn, 1)[0]
    other = client.submit_task("later")  # no worker runs it: keeps `blocked` blocked
    ready = client.submit_task("job", dependencies=[parent])
    blocked = client.submit_task("job", dependencies=[parent, other])
    assert queue.prune(HOUR) == 0
    start_worker({"job": lambda task: {"seen": task["dependency_results"]}})
    # The pending child, claimed after the parent passed the horizon, still reads its result.
    assert client.wait_for_task(ready, timeout=DEADLINE)["result"] == {
        "seen": {str(parent): {"n": 1}}
    }
    assert queue.prune(HOUR) == 0
    client.cancel_task(other)  # and so `blocked` is cancelled with it
    assert client.get_task(blocked)["state"] == "cancelled"
    assert queue.prune(HOUR) == 1
    assert existing(conn, [parent, ready, blocked, other]) == sorted([ready, blocked, other])


def test_a_failed_child_keeps_its_parent_while_it_may_be_retried(queue, conn):
    parent = finished_tasks(conn, 1)[0]
    child = finished_tasks(conn, 1, state="failed", age="1 minute")[0]
    conn.execute(
        "INSERT INTO omnispindle.task_dependencies (task_id, depends_on) VALUES (%s, %s)",
        [child, parent],
    )
    assert retention.count_prunable(queue.db, HOUR) == 0
    assert queue.prune(HOUR) == 0
    make_old(conn, [child])
    assert queue.prune(HOUR) == 2


def test_a_child_a_failure_cancelled_keeps_its_other_parent_while_it_may_come_back(queue, conn):
    """`report` waits on `parent` and `fetch`, and `fetch`'s failure cancelled it:
    retried with its dependents, `fetch` brings `report` back, which then reads
    `parent`'s result. So `parent` stays past the horizon until `fetch` is gone."""
    parent = finished_tasks(conn, 1)[0]
    fetch = finished_tasks(conn, 1, state="failed", age="1 minute")[0]
    report = conn.execute(
        "INSERT INTO omnispindle.tasks (task_type, state, cancel_reason, finished_at)"
        " VALUES ('report', 'cancelled', %s, now() - interval '1 minute') RETURNING id",
        [f"dependency {fetch} failed"],
    ).fetchone()[0]
    conn.execute(
        "INSERT INTO omnispindle.task_dependencies (task_id, depends_on) VALUES (%s, %s), (%s, %s)",
        [report, parent, report, fetch],
    )
    assert retention.count_prunable(queue.db, HOUR) == 0
    assert queue.prune(HOUR) == 0
    make_old(conn, [fetch])  # past the horizon itself, `fetch` goes, and `parent` after it
    assert queue.prune(HOUR) == 1
    assert existing(conn, [parent, fetch, report]) == [parent, report]
    assert queue.prune(HOUR) == 1
    assert existing(conn, [parent, fetch, report]) == [report]


def test_the_delete_checks_dependents_again_after_locking(queue, conn, client):
    parent = finished_tasks(conn, 1)[0]
    client.submit_task("job", dependencies=[parent])
    with queue.db.pool.connection() as own, own.transaction():
        deleted = execute(own, q.retention.prune_finished(keep_seconds=HOUR, ids=[parent]))
    assert deleted == []
    assert existing(conn, [parent]) == [parent]


@contextlib.contextmanager
def just_before(statement: str, action: Callable[[], object]) -> Iterator[None]:
    """Run ``action`` once, in the thread that sends it, just before the first
    statement named ``statement`` is sent."""
    sql_log = logging.getLogger("omnispindle.sql")

    class Hook(logging.Handler):
        fired = False

        def emit(self, record: logging.LogRecord) -> None:
            if not self.fired and record.getMessage() == statement:
                self.fired = True
                action()

    hook, level = Hook(logging.DEBUG), sql_log.level
    sql_log.setLevel(logging.DEBUG)
    sql_log.addHandler(hook)
    try:
        yield
    finally:
        sql_log.removeHandler(hook)
        sql_log.setLevel(level)
    assert hook.fired, f"no {statement} was sent"


@pytest.mark.parametrize("waiter", ["blocking", "asyncio"])
@pytest.mark.parametrize("count", [1, 20])
def test_a_wait_whose_task_is_pruned_meanwhile_raises_not_found(client, dsn, conn, waiter, count):
    """The pruner commits after the wait found that the task exists, before the
    wait reads its record: a wait on one task (whose check reads records at
    once) found nothing finished, a wait on twenty found it finished by id and
    then no record. Either ends with TaskNotFoundError, not at the timeout."""
    ids = finished_tasks(conn, count)
    with psycopg.connect(dsn) as pruner:
        assert execute(pruner, q.retention.prune_finished(keep_seconds=HOUR, ids=[ids[-1]]))
        with (
            just_before("get_tasks", pruner.commit),
            pytest.raises(TaskNotFoundError, match=f"no task with id {ids[-1]}$"),
        ):
            if waiter == "blocking":
                client.wait_for_batch(ids, timeout=10)
            else:
                asyncio.run(wait_asynchronously(dsn, ids, timeout=10))
    assert existing(conn, ids) == ids[:-1]


async def wait_asynchronously(dsn: str, ids: list[int], timeout: float) -> list:
    async with AsyncTaskQueueClient(dsn=dsn, poll_interval=0.2) as waiter:
        return await waiter.wait_for_batch(ids, timeout=timeout)


def test_stream_rows_and_edges_go_with_the_task(client, queue, conn, start_worker):
    def chatty(task):
        for n in range(3):
            current_task().emit({"chunk": n})
        return {"done": True}

    start_worker({"chatty": chatty}, schedule_interval=None)
    parent = client.submit_task("chatty")
    child = client.submit_task("chatty", dependencies=[parent])
    client.wait_for_task(child, timeout=DEADLINE)
    conn.execute(
        "INSERT INTO omnispindle.periodic_tasks (name, cron, task_type)"
        " VALUES ('hourly', '0 * * * *', 'chatty')"
    )
    conn.execute(
        "INSERT INTO omnispindle.periodic_ticks (periodic_name, tick_at, task_id)"
        " VALUES ('hourly', now(), %s)",
        [child],
    )
    assert (count(conn, "task_stream"), count(conn, "task_dependencies")) == (6, 1)
    make_old(conn, [parent, child])
    assert queue.prune(HOUR) == 2
    assert (count(conn, "task_stream"), count(conn, "task_dependencies")) == (0, 0)
    # The tick stays, so that it is never enqueued again; only its task is gone.
    assert conn.execute("SELECT task_id FROM omnispindle.periodic_ticks").fetchall() == [(None,)]
    with pytest.raises(TaskNotFoundError):
        client.get_task(child)


def test_rows_another_transaction_holds_are_skipped_not_waited_for(queue, dsn, conn):
    ids = finished_tasks(conn, 20)
    with psycopg.connect(dsn) as holder:
        holder.execute(
            "SELECT id FROM omnispindle.tasks WHERE id = ANY (%s) FOR KEY SHARE", [ids[:5]]
        )
        assert within_deadline(lambda: queue.prune(HOUR)) == 15
        holder.rollback()
    assert queue.prune(HOUR) == 5
    assert existing(conn, ids) == []


def test_a_parent_gaining_a_dependent_in_an_open_transaction_is_kept(client, queue, dsn, conn):
    parent = finished_tasks(conn, 1)[0]
    with psycopg.connect(dsn) as app:
        child = client.submit_task("job", dependencies=[parent], connection=app)
        assert within_deadline(lambda: queue.prune(HOUR)) == 0
        app.commit()
    assert queue.prune(HOUR) == 0
    assert client.get_task(child)["dependencies"] == [parent]


def test_concurrent_pruners_neither_wait_for_each_other_nor_count_twice(queue, dsn, conn):
    ids = finished_tasks(conn, 25)
    sweeper = Sweeper(queue.db, SweeperConfig(retention=HOUR, prune_batch_size=10))
    pool = ThreadPoolExecutor(max_workers=1)
    try:
        with psycopg.connect(dsn) as first:  # a pruner halfway through its batch
            assert execute(first, q.retention.try_lock_pruning())
            held = [
                row["id"]
                for row in execute(
                    first, q.retention.lock_prunable_tasks(keep_seconds=HOUR, limit=10, after=None)
                )
            ]
            assert held == ids[:10]
            assert within_deadline(sweeper.run_once).pruned == 0
            explicit = pool.submit(queue.prune, HOUR)  # queues behind the batch
            assert (
                len(execute(first, q.retention.prune_finished(keep_seconds=HOUR, ids=held))) == 10
            )
            first.commit()
        assert explicit.result(timeout=DEADLINE) == 15
    finally:
        pool.shutdown(wait=False)
    assert sweeper.run_once().pruned == 0
    assert existing(conn, ids) == []


def test_a_sweeper_works_a_backlog_down_in_bounded_batches(queue, conn):
    ids = finished_tasks(conn, 25)
    sweeper = Sweeper(queue.db, SweeperConfig(interval=5, retention=HOUR, prune_batch_size=10))
    passes = [sweeper.run_once() for _ in range(3)]
    assert [c.pruned for c in passes] == [10, 10, 5]
    assert [sweeper.pause_after(c) for c in passes] == [PRUNE_BACKLOG_PAUSE] * 2 + [5]
    assert existing(conn, ids) == []


def test_a_sweeper_without_retention_keeps_everything(queue, conn):
    ids = finished_tasks(conn, 5, age="3650 days")
    assert Sweeper(queue.db).run_once().pruned == 0
    assert existing(conn, ids) == ids


def test_a_workers_sweeper_prunes_when_retention_is_set(client, conn, start_worker):
    start_worker(
        {"job": lambda task: {"n": task["parameters"]["n"]}}, retention=HOUR, sweep_interval=0.1
    )
    ids = [client.submit_task("job", {"n": n}) for n in range(5)]
    for task_id in ids:
        client.wait_for_task(task_id, timeout=DEADLINE)
    make_old(conn, ids[:3])
    poll(lambda: existing(conn, ids) == ids[3:], timeout=DEADLINE)
    with pytest.raises(TaskNotFoundError):
        client.get_task(ids[0])


def cli(capsys, dsn: str, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([*args, "--dsn", dsn])
    out, err = capsys.readouterr()
    return code, out, err


def test_prune_command_dry_run_then_prune(capsys, dsn, conn):
    old = finished_tasks(conn, 3)
    recent = finished_tasks(conn, 1, age="1 minute")
    assert cli(capsys, dsn, "prune", "--older-than", "3600", "--dry-run") == (
        0,
        "would prune 3 finished tasks older than 3600 s\n",
        "",
    )
    code, out, _ = cli(capsys, dsn, "prune", "--older-than", "1h", "--dry-run", "--json")
    assert (code, json.loads(out)) == (0, {"prunable": 3, "older_than": 3600.0, "dry_run": True})
    assert existing(conn, old) == old
    code, out, _ = cli(capsys, dsn, "prune", "--older-than", "3600", "--batch-size", "2", "--json")
    assert (code, json.loads(out)) == (0, {"pruned": 3, "older_than": 3600.0, "dry_run": False})
    assert existing(conn, old + recent) == recent
    assert cli(capsys, dsn, "prune", "--older-than", "3600") == (
        0,
        "pruned 0 finished tasks older than 3600 s\n",
        "",
    )


def test_sweep_once_prunes_with_a_retention(capsys, dsn, conn):
    ids = finished_tasks(conn, 4)
    code, out, _ = cli(capsys, dsn, "sweep", "--once", "--retention", "3600")
    assert (code, json.loads(out)["pruned"]) == (0, 4)
    assert existing(conn, ids) == []


@pytest.mark.parametrize(
    "args",
    [
        ["prune", "--older-than", "0"],
        ["prune", "--older-than", "-5"],
        ["prune", "--older-than", "soon"],
        ["prune", "--older-than", "nan"],
        ["prune", "--older-than", "0d"],
        ["prune", "--older-than", "1e12"],
        ["prune", "--batch-size", "0"],
        ["prune", "--batch-size", "1.5"],
        ["prune", "--batch-size", "100001"],
        ["sweep", "--once", "--retention", "0"],
        ["sweep", "--once", "--retention", "60", "--no-prune"],
        ["worker", "--executors", "nowhere", "--retention", "-1"],
    ],
)
def test_bad_arguments_are_usage_errors_and_change_nothing(capsys, dsn, conn, args):
    ids = finished_tasks(conn, 3)
    code, out, err = cli(capsys, dsn, *args)
    assert (code, out) == (2, "")
    assert err.startswith("omnispindle: argument ") and len(err.splitlines()) == 1, err
    assert existing(conn, ids) == ids


@pytest.mark.parametrize("older_than", [0, -1, math.nan, math.inf, True, "3600", None, 1e12])
def test_prune_refuses_a_bad_horizon(queue, conn, older_than):
    ids = finished_tasks(conn, 3)
    with pytest.raises(ValidationError, match="older_than"):
        queue.prune(older_than)
    with pytest.raises(ValidationError, match="older_than"):
        retention.count_prunable(queue.db, older_than)
    assert existing(conn, ids) == ids


@pytest.mark.parametrize("batch_size", [0, -1, 1.5, True, 100_001])
def test_prune_refuses_a_bad_batch_size(queue, conn, batch_size):
    ids = finished_tasks(conn, 3)
    with pytest.raises(ValidationError, match="batch_size"):
        queue.prune(HOUR, batch_size=batch_size)
    assert existing(conn, ids) == ids


@pytest.mark.parametrize(
    "settings",
    [
        {"retention": 0},
        {"retention": -HOUR},
        {"retention": math.nan},
        {"retention": "1h"},
        {"prune_batch_size": 0},
        {"prune_batch_size": 2.5},
    ],
)
def test_sweeper_retention_settings_are_validated(settings):
    with pytest.raises(ValidationError):
        SweeperConfig(**settings)


@pytest.mark.parametrize("settings", [{"retention": 0}, {"retention": -1, "sweep_interval": None}])
def test_worker_retention_is_validated(queue, settings):
    with pytest.raises(ValidationError, match="retention"):
        WorkerClient(local_queue=queue, **settings)


def finished_index_entries_read(conn, after) -> int:
    """Entries of tasks_finished_idx a batch of 10 reads (then undone)."""
    read = "SELECT pg_stat_get_xact_tuples_returned('omnispindle.tasks_finished_idx'::regclass)"
    with conn.transaction(force_rollback=True):
        # A generic plan, as a prepared statement gets: planning with the values
        # would probe the index's ends (over the dead entries) and count too.
        conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        before = conn.execute(read).fetchone()[0]
        rows = execute(
            conn, q.retention.lock_prunable_tasks(keep_seconds=HOUR, limit=10, after=after)
        )
        assert len(rows) == 10
        return conn.execute(read).fetchone()[0] - before


def test_under_a_held_snapshot_batches_from_the_cursor_skip_the_pruned_entries(queue, conn, dsn):
    """Vacuum cannot remove the index entries of tasks deleted after an old
    snapshot; a batch from the oldest reads each of them, one from the cursor does not."""
    finished_tasks(conn, 3000)
    cursor = retention.PruneCursor(min_interval=float("inf"))
    with psycopg.connect(dsn) as holder:
        holder.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        holder.execute("SELECT count(*) FROM omnispindle.tasks").fetchone()
        for _ in range(25):
            assert retention.prune_batch(queue.db, HOUR, 100, cursor=cursor) == 100
        conn.execute("VACUUM omnispindle.tasks")
        from_oldest = finished_index_entries_read(conn, None)
        from_cursor = finished_index_entries_read(conn, cursor.start())
        holder.rollback()
    assert from_oldest >= 2500 and from_cursor <= 20, (from_oldest, from_cursor)


def test_a_task_kept_behind_the_cursor_is_pruned_by_a_later_batch_from_the_oldest(queue, conn):
    [parent] = finished_tasks(conn, 1)
    child = conn.execute(
        "INSERT INTO omnispindle.tasks (task_type, state) VALUES ('job', 'pending') RETURNING id"
    ).fetchone()[0]
    conn.execute("INSERT INTO omnispindle.task_dependencies VALUES (%s, %s)", [child, parent])
    later = finished_tasks(conn, 3, age="1 hour 30 minutes")
    sweeper = Sweeper(queue.db, SweeperConfig(retention=HOUR, prune_batch_size=10))
    assert sweeper.run_once().pruned == 3  # the parent is kept: its child still waits
    assert existing(conn, [parent] + later) == [parent]
    conn.execute(
        "UPDATE omnispindle.tasks SET state = 'cancelled', finished_at = now() - "
        "interval '2 hours' WHERE id = %s",
        [child],
    )
    assert sweeper.run_once().pruned == 0  # behind the cursor, until a batch from the oldest
    sweeper.prune_cursor.oldest_walks.next_at = 0.0
    assert sweeper.run_once().pruned == 2
    assert existing(conn, [parent, child]) == []
