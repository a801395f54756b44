"""One runner at a time for each maintenance duty: the sweeper and the periodic
scheduler run in the process that holds the duty's lease, not in every worker."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from omnispindle._maintenance import election
from omnispindle._maintenance.election import DutyLease
from omnispindle._maintenance.sweeper import SweeperConfig
from omnispindle._worker._duties import Duties
from omnispindle._worker._timers import Timers

from ..acceptance.workers import poll, start_worker_process

SHORT = 0.3


def holder_pid(conn, duty=election.SWEEP):
    row = conn.execute(
        "SELECT pid FROM omnispindle.maintenance_leases WHERE duty = %s", [duty]
    ).fetchone()
    return None if row is None else row[0]


def test_one_process_holds_a_duty_until_its_lease_lapses(queue):
    first, second = (DutyLease(queue.db, election.SWEEP, SHORT) for _ in range(2))
    assert first.hold()
    assert not second.hold()
    assert first.hold()  # renewed
    poll(second.hold, timeout=10)  # lapsed: its holder stopped renewing it
    assert not first.hold()


def test_a_holder_that_gives_up_hands_the_duty_on_at_once(queue):
    first, second = (DutyLease(queue.db, election.SWEEP, 60) for _ in range(2))
    assert first.hold()
    first.give_up()
    assert second.hold()


def test_the_duties_are_held_apart(queue):
    assert DutyLease(queue.db, election.SWEEP, 60).hold()
    assert DutyLease(queue.db, election.SCHEDULE, 60).hold()


def test_processes_asking_at_once_elect_one(queue):
    leases = [DutyLease(queue.db, election.SWEEP, 60) for _ in range(8)]
    start = threading.Barrier(len(leases))
    held: list[bool] = []

    def ask(lease: DutyLease) -> None:
        start.wait()
        held.append(lease.hold())

    threads = [threading.Thread(target=ask, args=(lease,)) for lease in leases]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(held) == [False] * 7 + [True]


def test_a_worker_without_the_duties_only_asks_for_them(queue, record_statements):
    """Each worker process swept and looked at the schedules: seven statements a
    pass in every process of a fleet."""
    holder, other = (Duties(queue.db, Timers(1.0), SweeperConfig(interval=0.2), 0.2) for _ in "ab")
    holder.run_due()
    statements = record_statements()
    other.run_due()
    assert statements.names == ["take_maintenance", "take_maintenance"]


def test_a_duty_nobody_may_hold_is_refused_by_the_table(conn):
    with pytest.raises(Exception, match="maintenance_leases_duty_known"):
        conn.execute(
            "INSERT INTO omnispindle.maintenance_leases VALUES "
            "('vacuum', gen_random_uuid(), 'h', 1, now())"
        )


def test_one_of_three_workers_sweeps_and_another_takes_over_when_it_is_killed(dsn, conn):
    """Every worker process ran its own sweeper and periodic scheduler: a fleet's
    maintenance grew with the fleet."""
    workers = [start_worker_process(dsn, "--sweep-interval", "0.2") for _ in range(3)]
    try:
        pids = {worker.pid for worker in workers}
        first = poll(lambda: holder_pid(conn), timeout=30)
        assert first in pids
        assert poll(lambda: holder_pid(conn, election.SCHEDULE), timeout=30) in pids
        # The holder keeps it while it runs (a lease is 2 s, passes every 0.2 s).
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            assert holder_pid(conn) == first
            time.sleep(0.1)
        os.kill(first, signal.SIGKILL)
        killed_at = time.monotonic()
        second = poll(lambda: (pid := holder_pid(conn)) != first and pid, timeout=30)
        assert second in pids - {first}
        # Within the lease (and a pass) of the kill.
        assert time.monotonic() - killed_at < election.lease_seconds(0.2) + 1.5
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.terminate()
        for worker in workers:
            worker.wait(30)


def test_a_stopping_worker_hands_its_duties_on(dsn, conn):
    worker = start_worker_process(dsn, "--sweep-interval", "0.2")
    try:
        poll(lambda: holder_pid(conn) == worker.pid, timeout=30)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)
    assert conn.execute("SELECT count(*) FROM omnispindle.maintenance_leases").fetchone()[0] == 0
