"""load_state(): work left running by a crashed worker goes back to the queue."""

from __future__ import annotations

CRASHED_CLAIM = """
UPDATE omnispindle.tasks
SET state = 'running', attempts = attempts + 1, worker_id = gen_random_uuid(),
    lease_token = gen_random_uuid(), lease_expires_at = now() - interval '1 second',
    started_at = now() - interval '1 minute'
WHERE id = ANY (%s)
"""


def test_load_state_recovers_expired_leases(client, queue, conn, start_worker):
    retried = client.submit_task("job", {"n": 1})
    exhausted = client.submit_task("job", {"n": 2}, max_retries=0)
    conn.execute(CRASHED_CLAIM, [[retried, exhausted]])
    assert queue.load_state() == {"pending": 1, "failed": 1}
    failed = client.get_task(exhausted)
    assert failed["error"]["type"] == "LeaseExpired"
    assert "stopped heartbeating" in failed["error"]["message"]
    start_worker({"job": lambda task: {"n": task["parameters"]["n"], "attempt": task["attempt"]}})
    assert client.wait_for_task(retried, timeout=30)["result"] == {"n": 1, "attempt": 2}


def test_a_late_result_from_a_lost_lease_is_dropped(client, conn):
    """Fencing: completing with a stale token changes nothing."""
    from omnispindle._db import queries as q
    from omnispindle._db.pool import execute

    task_id = client.submit_task("job")
    conn.execute(CRASHED_CLAIM, [[task_id]])
    stale = execute(
        conn,
        q.tasks.complete_tasks(
            q.tasks.Results([task_id], ["00000000-0000-0000-0000-000000000000"], ["{}"])
        ),
    )
    assert stale == []
    assert client.get_task(task_id)["state"] == "running"
