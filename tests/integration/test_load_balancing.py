"""Load balancing: a worker claims only what it can start now, so a slow one takes
less of a shared backlog than a fast one, with no setting to tune."""

from __future__ import annotations

import collections
import time


def test_a_slow_worker_takes_less_of_a_shared_backlog(client, start_worker, conn):
    def slow(task):
        time.sleep(0.05)
        return {}

    def fast(task):
        time.sleep(0.005)
        return {}

    start_worker({"balanced": slow}, concurrency=2, name="slow")
    start_worker({"balanced": fast}, concurrency=2, name="fast")
    ids = client.submit_batch([{"task_type": "balanced"}] * 300)
    assert {t["state"] for t in client.wait_for_batch(ids, timeout=60)} == {"succeeded"}
    by_worker = collections.Counter(
        dict(
            conn.execute(
                "SELECT w.name, count(*) FROM omnispindle.tasks t "
                "JOIN omnispindle.workers w ON w.id = t.worker_id "
                "WHERE t.id = ANY (%s) GROUP BY w.name",
                [ids],
            ).fetchall()
        )
    )
    # Ten times slower per task: it finishes, and so claims, far fewer.
    assert by_worker["fast"] > 3 * by_worker["slow"], by_worker
    assert by_worker["slow"] > 0, by_worker
    print(f"\nof 300 tasks, the fast worker ran {by_worker['fast']}, the slow {by_worker['slow']}")
