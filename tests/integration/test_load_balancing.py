"""Load balancing: a worker claims only what it can start now, so a slow one takes
less of a shared backlog than a fast one, with no setting to tune."""

from __future__ import annotations

import collections
import time

import psycopg

from .test_type_limits import xact_tasks_fetched


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


def add_worker(conn, name, capabilities, task_types=("work",), concurrency=1):
    """A live worker's row, as a worker process registers it."""
    return conn.execute(
        "INSERT INTO omnispindle.workers (name, host, pid, capabilities, task_types, "
        "concurrency, version, lease_timeout_seconds) "
        "VALUES (%s, 'host', 1, %s, %s, %s, 'test', 30) RETURNING id",
        [name, list(capabilities), list(task_types), concurrency],
    ).fetchone()[0]


def claim_as(conn, worker_id, capabilities, limit=1):
    """The kinds of the tasks one claim of ``worker_id`` took."""
    rows = conn.execute(
        "SELECT c.parameters ->> 'kind' FROM omnispindle.claim_tasks("
        "ARRAY['work'], %s, %s, %s, 30) c",
        [list(capabilities), limit, worker_id],
    ).fetchall()
    return [kind for (kind,) in rows]


def gpu_and_common(client):
    """A GPU task first, at a higher priority, then common work."""
    client.submit_task("work", {"kind": "gpu"}, priority=5, required_capabilities=["gpu"])
    client.submit_task("work", {"kind": "common"})


def test_a_generalist_leaves_a_specialists_work_to_the_idle_specialist(client, conn):
    """Strict priority gave the GPU task to whichever worker claimed first, though
    only one of them could do the common work."""
    generalist = add_worker(conn, "generalist", ["gpu", "cpu"])
    specialist = add_worker(conn, "specialist", ["gpu"])
    gpu_and_common(client)
    assert claim_as(conn, generalist, ["gpu", "cpu"]) == ["common"]
    assert claim_as(conn, generalist, ["gpu", "cpu"]) == []
    assert claim_as(conn, specialist, ["gpu"]) == ["gpu"]


def test_a_busy_stale_or_other_specialist_leaves_the_task_to_the_generalist(client, conn):
    generalist = add_worker(conn, "generalist", ["gpu", "cpu"])
    specialist = add_worker(conn, "specialist", ["gpu"])
    add_worker(conn, "other types", ["gpu"], task_types=["other"])
    client.submit_task("work", {"kind": "busy"}, priority=9, required_capabilities=["gpu"])
    assert claim_as(conn, specialist, ["gpu"]) == ["busy"]  # its one slot is taken
    gpu_and_common(client)
    assert claim_as(conn, generalist, ["gpu", "cpu"]) == ["gpu"]
    client.submit_task("work", {"kind": "stale"}, priority=5, required_capabilities=["gpu"])
    conn.execute(
        "UPDATE omnispindle.workers SET concurrency = 2, "
        "last_heartbeat_at = now() - interval '1 minute' WHERE id = %s",
        [specialist],
    )
    assert claim_as(conn, generalist, ["gpu", "cpu"]) == ["stale"]


def test_a_task_ready_for_a_while_goes_to_any_worker_that_can_run_it(client, conn):
    """A specialist that stalls while it heartbeats holds its work back for 5 s at most."""
    generalist = add_worker(conn, "generalist", ["gpu", "cpu"])
    add_worker(conn, "specialist", ["gpu"])
    gpu_and_common(client)
    conn.execute(
        "UPDATE omnispindle.tasks SET run_after = now() - interval '6 seconds' "
        "WHERE parameters ->> 'kind' = 'gpu'"
    )
    assert claim_as(conn, generalist, ["gpu", "cpu"]) == ["gpu"]


def test_a_claim_counts_the_specialists_running_tasks_once(client, conn, dsn):
    """Each task met that needs a capability counted again the running tasks of
    every live specialist that could take it: a claim of 8 among 40 busy
    specialists of 4 slots read their 160 running tasks 8 times."""
    specialists = [add_worker(conn, f"specialist {n}", ["gpu"], concurrency=4) for n in range(40)]
    client.submit_batch([{"task_type": "work", "required_capabilities": ["gpu"]}] * 160)
    for specialist in specialists:
        assert len(claim_as(conn, specialist, ["gpu"], limit=4)) == 4
    generalist = add_worker(conn, "generalist", ["gpu", "cpu"], concurrency=8)
    client.submit_batch(
        [{"task_type": "work", "parameters": {"kind": "gpu"}, "required_capabilities": ["gpu"]}] * 8
    )
    conn.execute("ANALYZE omnispindle.tasks, omnispindle.workers")
    with psycopg.connect(dsn) as fresh:  # one transaction: its own statistics
        assert claim_as(fresh, generalist, ["gpu", "cpu"], limit=8) == ["gpu"] * 8
        fetched = xact_tasks_fetched(fresh)
    assert fetched < 2 * 160, fetched
