"""Leases with fencing, heartbeats, the sweeper and timeouts."""

from __future__ import annotations

import logging
import threading
import time

import psycopg
import pytest

from omnispindle import current_task
from omnispindle._db import queries as q
from omnispindle._db.pool import execute
from omnispindle._maintenance.sweeper import Sweeper, SweeperConfig
from omnispindle.errors import ValidationError

from ..acceptance.workers import poll
from .test_fast_paths import claim


def complete(conn, row, result="{}"):
    return execute(
        conn, q.tasks.complete_tasks(q.tasks.Results([row["id"]], [row["lease_token"]], [result]))
    )


def claim_lapsed(conn):
    """Claim with a lease of 1 ms, then wait until the database's clock has passed
    it: a sweep that began within that millisecond would find the lease held."""
    row = claim(conn, lease_seconds=0.001)[0]
    poll(
        lambda: conn.execute(
            "SELECT lease_expires_at < clock_timestamp() FROM omnispindle.tasks WHERE id = %s",
            [row["id"]],
        ).fetchone()[0],
        timeout=5,
        interval=0.001,
    )
    return row


def test_a_swept_lease_cannot_be_completed_by_its_old_holder(client, queue, conn):
    task_id = client.submit_task("job")
    first = claim_lapsed(conn)
    counts = Sweeper(queue.db).run_once()
    assert (counts.requeued, counts.failed, counts.dead_workers) == (1, 0, 0)
    assert len(counts.retry_in) == 1
    assert 0.5 <= counts.retry_in[0] <= 1.0  # base backoff 1 s with equal jitter
    conn.execute("UPDATE omnispindle.tasks SET run_after = now() WHERE id = %s", [task_id])
    second = claim(conn)[0]
    assert second["attempts"] == 2
    assert complete(conn, first, '{"late": true}') == []
    assert complete(conn, second, '{"current": true}') == [{"id": task_id, "state": "succeeded"}]
    task = client.get_task(task_id)
    assert (task["state"], task["result"]) == ("succeeded", {"current": True})
    assert task["error"]["type"] == "LeaseExpired"


def test_sweeper_racing_a_late_completion_has_exactly_one_winner(client, queue, conn):
    sweeper = Sweeper(queue.db)
    for _ in range(25):
        task_id = client.submit_task("job")
        row = claim(conn, lease_seconds=0.001)[0]
        barrier = threading.Barrier(2, timeout=10)
        outcome = {}

        def sweep(barrier=barrier, outcome=outcome):
            barrier.wait()
            outcome["swept"] = sweeper.run_once().requeued

        def finish(barrier=barrier, outcome=outcome, row=row):
            barrier.wait()
            with queue.db.pool.connection() as other:
                outcome["completed"] = len(complete(other, row))

        threads = [threading.Thread(target=sweep), threading.Thread(target=finish)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=20)
        state = client.get_task(task_id)["state"]
        assert outcome["swept"] + outcome["completed"] == 1, outcome
        assert state == ("succeeded" if outcome["completed"] else "pending")


def test_a_slow_heartbeating_task_is_never_taken_over(client, start_worker):
    release = threading.Event()
    calls = []

    def slow(task):
        calls.append(task["attempt"])
        release.wait(60)
        return {"done": True}

    start_worker({"slow": slow}, lease_timeout=1.0, heartbeat_interval=0.2, sweep_interval=0.05)
    start_worker({"slow": slow}, lease_timeout=1.0, heartbeat_interval=0.2, sweep_interval=0.05)
    task_id = client.submit_task("slow")
    poll(lambda: client.get_task(task_id)["state"] == "running", timeout=30)
    started = time.monotonic()
    # Three lease lengths pass with the task running; every check sees it untouched.
    while time.monotonic() - started < 3.0:
        task = client.get_task(task_id)
        assert (task["state"], task["attempts"], task["error"]) == ("running", 1, None)
        time.sleep(0.1)
    release.set()
    task = client.wait_for_task(task_id, timeout=30)
    assert (task["state"], task["attempts"], task["error"]) == ("succeeded", 1, None)
    assert calls == [1]


def test_a_hung_executor_times_out_and_its_late_result_is_dropped(client, start_worker, caplog):
    caplog.set_level(logging.WARNING, logger="omnispindle.worker")
    release = threading.Event()

    def hang(task):
        release.wait(60)
        return {"late": True}

    start_worker({"hang": hang, "quick": lambda task: {"quick": True}}, concurrency=1)
    hung = client.submit_task("hang", timeout=0.3, max_retries=1, retry_backoff=0.01)
    assert client.wait_for_task(hung, timeout=30)["state"] == "failed"
    # Both attempts are abandoned, yet the worker's one slot still serves other work.
    assert client.wait_for_task(client.submit_task("quick"), timeout=30)["result"] == {
        "quick": True
    }
    task = client.get_task(hung)
    assert task["attempts"] == 2
    assert task["error"]["type"] == "TaskTimeout"
    assert "timeout of 0.3 s" in task["error"]["message"]
    release.set()
    poll(lambda: "lease no longer held" in caplog.text, timeout=30)
    assert client.get_task(hung)["result"] is None


def until_told_to_stop(stopped: threading.Event):
    """An executor that works until its attempt is told to stop, as the docs show."""

    def crawl(task):
        while not current_task().wait_cancelled(0.05):
            pass
        stopped.set()
        return {"late": True}

    return crawl


def test_an_executor_past_its_timeout_is_told_to_stop(client, start_worker):
    stopped = threading.Event()
    start_worker({"crawl": until_told_to_stop(stopped)})
    task_id = client.submit_task("crawl", timeout=0.3, max_retries=0)
    task = client.wait_for_task(task_id, timeout=30)
    assert (task["state"], task["error"]["type"]) == ("failed", "TaskTimeout")
    assert stopped.wait(10), "the abandoned attempt ran on, never told to stop"
    assert client.get_task(task_id)["result"] is None


def test_an_executor_whose_lease_was_taken_is_told_to_stop(client, conn, start_worker):
    stopped = threading.Event()
    start_worker({"crawl": until_told_to_stop(stopped)}, heartbeat_interval=0.2)
    task_id = client.submit_task("crawl")
    poll(lambda: client.get_task(task_id)["state"] == "running", timeout=30)
    # Another attempt's lease, as after a sweep and a claim elsewhere.
    conn.execute(
        "UPDATE omnispindle.tasks SET lease_token = gen_random_uuid() WHERE id = %s", [task_id]
    )
    assert stopped.wait(10), "the attempt that lost its lease ran on, never told to stop"
    assert client.get_task(task_id)["state"] == "running"


def test_an_attempt_set_back_by_hand_and_claimed_again_is_told_to_stop(client, conn, start_worker):
    stopped = threading.Event()
    start_worker({"crawl": until_told_to_stop(stopped)}, concurrency=2)
    task_id = client.submit_task("crawl")
    poll(lambda: client.get_task(task_id)["state"] == "running", timeout=30)
    conn.execute(
        "UPDATE omnispindle.tasks SET state = 'pending', lease_token = NULL, "
        "lease_expires_at = NULL WHERE id = %s",
        [task_id],
    )
    # The same worker claims it again before a heartbeat finds the first lease gone.
    poll(lambda: client.get_task(task_id)["attempts"] == 2, timeout=30)
    assert stopped.wait(5), "the first attempt ran on beside the second, never told to stop"
    stopped.clear()
    client.cancel_task(task_id)
    assert client.wait_for_task(task_id, timeout=30)["state"] == "cancelled"
    assert stopped.is_set()


def test_leases_never_reach_past_the_timeout_and_the_sweeper_says_so(client, queue, conn):
    task_id = client.submit_task("job", timeout=0.2, max_retries=0)
    row = claim(conn, lease_seconds=30)[0]
    span = conn.execute(
        "SELECT extract(epoch FROM lease_expires_at - started_at) "
        "FROM omnispindle.tasks WHERE id = %s",
        [task_id],
    ).fetchone()[0]
    assert float(span) == pytest.approx(0.2, abs=0.01)
    sweeper = Sweeper(queue.db)
    poll(lambda: sweeper.run_once().failed, timeout=10)
    task = client.get_task(task_id)
    assert (task["state"], task["error"]["type"]) == ("failed", "TaskTimeout")
    assert complete(conn, row) == []


def test_paced_passes_leave_the_lease_scans_until_they_are_due(client, queue, conn):
    """After a scan that took long (under an old snapshot), the sweeping loops
    skip the lease statements for a while; a pass asked for directly does not."""
    task_id = client.submit_task("job")
    claim_lapsed(conn)
    sweeper = Sweeper(queue.db)
    for _ in range(2):  # as if the last two scans took a minute each
        sweeper.lease_scans.walked(60.0)
    skipped = sweeper.run_once(paced=True)
    assert (skipped.requeued, skipped.next_expiry_in) == (0, None)
    assert client.get_task(task_id)["state"] == "running"
    assert sweeper.run_once().requeued == 1
    sweeper.lease_scans.next_at = 0.0  # the schedule's time has come
    client.submit_task("job")
    claim_lapsed(conn)
    assert sweeper.run_once(paced=True).requeued == 1
    assert sweeper.lease_scans.next_at > 0.0  # and the next one is scheduled


def test_a_lease_scan_held_up_by_a_lock_puts_off_no_later_scan(client, queue, conn, dsn):
    """A scan that waited (a lock, a pooler holding it through an outage, a paused
    process) was taken for a slow walk: the passes after it skipped the lease
    statements for fifty times the wait, and an expired lease stayed running."""
    sweeper = Sweeper(queue.db)
    sweeper.run_once(paced=True)
    poll(sweeper.lease_scans.due, timeout=10)
    with psycopg.connect(dsn) as locker:
        locker.execute("LOCK TABLE omnispindle.tasks IN ACCESS EXCLUSIVE MODE")
        held_up = threading.Thread(target=sweeper.run_once, kwargs={"paced": True})
        held_up.start()
        poll(lambda: lock_waited(conn) > 1.0, timeout=10)
        locker.rollback()
    held_up.join(10)
    task_id = client.submit_task("job")
    claim_lapsed(conn)
    # As paced after the quick scan before: within a second, not fifty.
    assert poll(lambda: sweeper.run_once(paced=True).requeued, timeout=5) == 1
    assert client.get_task(task_id)["state"] == "pending"


def lock_waited(conn) -> float:
    """Seconds the longest wait for a lock on the database has lasted."""
    row = conn.execute(
        "SELECT extract(epoch FROM max(clock_timestamp() - query_start))::float "
        "FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
    ).fetchone()
    return row[0] or 0.0


def test_silent_workers_are_declared_dead(queue, conn, start_worker):
    conn.execute("""
        INSERT INTO omnispindle.workers (name, host, pid, concurrency, version, last_heartbeat_at)
        VALUES ('ghost', 'elsewhere', 1, 1, 'test', now() - interval '2 minutes')""")
    live = start_worker({"job": lambda task: {}}, name="alive", sweep_interval=None)
    poll(lambda: any(w["name"] == "alive" for w in queue.list_workers()), timeout=30)
    counts = Sweeper(queue.db, SweeperConfig(dead_worker_after=60)).run_once()
    assert counts.dead_workers == 1
    health = {w["name"]: w["state"] for w in queue.list_workers()}
    assert health == {"ghost": "dead", "alive": "active"}
    live.stop(timeout=30)
    assert {w["name"]: w["state"] for w in queue.list_workers()}["alive"] == "stopped"


def test_workers_stopped_or_dead_over_a_week_ago_are_forgotten(queue, conn):
    """Every start of a worker adds a row that the views of workers read: the
    sweeper deletes those stopped or declared dead over a week ago."""
    conn.execute("""
        INSERT INTO omnispindle.workers
            (name, host, pid, concurrency, version, state, last_heartbeat_at, stopped_at)
        VALUES ('stopped_long_ago', 'h', 1, 1, 'test', 'stopped',
                now() - interval '8 days', now() - interval '8 days'),
               ('dead_long_ago', 'h', 2, 1, 'test', 'dead',
                now() - interval '9 days', now() - interval '8 days'),
               ('stopped_yesterday', 'h', 3, 1, 'test', 'stopped',
                now() - interval '1 day', now() - interval '1 day'),
               ('silent_for_long', 'h', 4, 1, 'test', 'active',
                now() - interval '8 days', NULL)""")
    Sweeper(queue.db, SweeperConfig()).run_once()
    health = {w["name"]: w["state"] for w in queue.list_workers()}
    assert health == {"stopped_yesterday": "stopped", "silent_for_long": "dead"}


def test_the_row_of_a_live_worker_cannot_be_deleted(queue, conn, start_worker):
    """A live worker's heartbeats update its row and never make it again: deleted,
    the worker ran on unseen by list_workers, worker_summary and the dashboard."""
    conn.execute("""
        INSERT INTO omnispindle.workers
            (name, host, pid, concurrency, version, state, last_heartbeat_at, stopped_at)
        VALUES ('crashed', 'h', 1, 1, 'test', 'active', now() - interval '2 minutes', NULL),
               ('stopped', 'h', 2, 1, 'test', 'stopped', now(), now())""")
    live = start_worker({"job": lambda task: {}}, name="alive", sweep_interval=None)
    poll(lambda: any(w["name"] == "alive" for w in queue.list_workers()), timeout=30)

    with pytest.raises(psycopg.errors.CheckViolation) as raised:
        conn.execute("DELETE FROM omnispindle.workers")
    assert raised.value.diag.constraint_name == "workers_live_kept"
    assert "worker alive" in raised.value.diag.message_primary
    assert "stop it first" in raised.value.diag.message_hint
    assert {w["name"] for w in queue.list_workers()} == {"crashed", "stopped", "alive"}

    conn.execute("DELETE FROM omnispindle.workers WHERE name <> 'alive'")
    live.stop(timeout=30)
    conn.execute("DELETE FROM omnispindle.workers")
    assert queue.list_workers() == []


@pytest.mark.parametrize(
    "settings",
    [
        {"interval": 0},
        {"interval": -1},
        {"batch_size": 0},
        {"batch_size": 1.5},
        {"dead_worker_after": float("nan")},
    ],
)
def test_sweeper_config_is_validated(settings):
    with pytest.raises(ValidationError):
        SweeperConfig(**settings)
