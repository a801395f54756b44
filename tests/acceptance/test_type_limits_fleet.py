"""Task type limits under a fleet of worker processes: a running limit is never
exceeded, and a rate holds, as recorded by the executors themselves."""

from __future__ import annotations

import signal

import pytest

from .workers import start_worker_process

PROCESSES = 8


@pytest.fixture
def intervals(conn):
    conn.execute(
        "CREATE TABLE test_intervals (task_id bigint NOT NULL, pid integer NOT NULL, "
        "started double precision NOT NULL, finished double precision NOT NULL)"
    )
    return conn


@pytest.fixture
def fleet(dsn):
    workers = [
        start_worker_process(dsn, "--concurrency", "4", "--name", f"fleet-{n}")
        for n in range(PROCESSES)
    ]
    yield workers
    for worker in workers:
        worker.send_signal(signal.SIGTERM)
    assert [worker.wait(timeout=60) for worker in workers] == [0] * PROCESSES


def most_at_once(spans: list[tuple[float, float]]) -> int:
    """The most spans open at one instant (an end before a start at the same time)."""
    events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    running = most = 0
    for _, change in events:
        running += change
        most = max(most, running)
    return most


def test_most_at_once_counts_overlaps():
    assert most_at_once([(0, 2), (1, 3), (2, 4)]) == 2
    assert most_at_once([(0, 5), (1, 2), (1.5, 3), (4, 6)]) == 3


def run_all(client, fleet, count, seconds):
    ids = client.submit_batch(
        [{"task_type": "interval", "parameters": {"seconds": seconds}} for _ in range(count)]
    )
    tasks = client.wait_for_batch(ids, timeout=120)
    assert {t["state"] for t in tasks} == {"succeeded"}


def test_eight_processes_never_run_more_than_a_limit_of_three(client, fleet, intervals):
    client.set_task_type_limit("interval", max_running=3)
    run_all(client, fleet, 240, 0.03)
    spans = intervals.execute("SELECT started, finished FROM test_intervals").fetchall()
    pids = intervals.execute("SELECT count(DISTINCT pid) FROM test_intervals").fetchone()[0]
    assert len(spans) == 240
    assert most_at_once(spans) == 3
    # Which processes ran them is not the point: a process that finishes one claims
    # the next in the same statement, and may well keep the type to itself.
    print(f"\n240 tasks ran in {pids} of {PROCESSES} processes, at most 3 at once")


def test_eight_processes_start_a_rated_type_at_its_rate(client, fleet, intervals):
    """Past the first burst (one second's worth), starts follow the rate."""
    client.set_task_type_limit("interval", starts_per_second=50)
    run_all(client, fleet, 400, 0.001)
    starts = [row[0] for row in intervals.execute("SELECT started FROM test_intervals ORDER BY 1")]
    steady = starts[100:]
    rate = (len(steady) - 1) / (steady[-1] - steady[0])
    print(f"\n300 steady starts at {rate:.1f}/s against a limit of 50/s")
    assert 45 <= rate <= 55
