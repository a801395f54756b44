"""The fault suite (``make chaos``): faults caused on a server of the test's own
while worker processes drain a fed queue. Each prints its figures; none may lose
a task, and a submit call that raises must leave none (issue 17)."""

from __future__ import annotations

import os
import signal
import threading
import time

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from ..acceptance import servers
from ..pgbouncer import pgbouncer
from .scenario import Run, wait_for_steady_rate

pytestmark = pytest.mark.chaos
AFTER_FAULT_S = 10


@pytest.fixture
def server():
    with servers.own_server(migrated=True) as own:
        yield own


@pytest.fixture
def report(capsys):
    def show(figures) -> None:
        with capsys.disabled():
            print("\n" + figures.line())
        assert figures.lost == 0, figures.line()

    return show


def kill_backends(dsn: str, which: str = "true") -> None:
    with psycopg.connect(dsn, autocommit=True) as killer:
        killer.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND backend_type = 'client backend' AND " + which
        )


def faulted(run: Run, scenario: str, cause) -> object:
    wait_for_steady_rate(run)
    start = time.monotonic()
    cause()
    end = time.monotonic()
    run.steady(AFTER_FAULT_S)
    return run.figures(scenario, start, end)


@pytest.mark.parametrize("how", ["fast", "immediate"])
def test_a_restart(server, report, how):
    with Run(server.dsn, server.dsn) as run:
        report(faulted(run, f"restart -m {how}", lambda: server.restart(how)))


@pytest.mark.parametrize("seconds", [10, 35])
def test_an_outage(server, report, seconds):
    """After a 30 s outage a worker resumed 29 s late: the pool's pauses between
    attempts doubled (1, 2, 4, 8, 16, 32 s), and 35 s falls far from any attempt."""

    def outage() -> None:
        server.stop()
        _pause(seconds)
        server.start()

    with Run(server.dsn, server.dsn) as run:
        figures = faulted(run, f"stopped for {seconds} s", outage)
        report(figures)
    # Back within the pool's reconnect window (5 s), with room for a busy machine.
    assert figures.back_to_90_s is not None and figures.back_to_90_s < 10, figures.line()


def test_backends_killed_every_two_seconds(server, report):
    def kills() -> None:
        for _ in range(10):
            kill_backends(server.dsn)
            _pause(2)

    with Run(server.dsn, server.dsn) as run:
        report(faulted(run, "backends killed x10, 2 s", kills))


def test_workers_killed_with_sigkill(server, report):
    with Run(server.dsn, server.dsn) as run:

        def sigkills() -> None:
            for _ in range(5):
                doomed = next(w for w in run.workers if w.poll() is None)
                doomed.send_signal(signal.SIGKILL)
                run.start_worker()
                _pause(2)

        report(faulted(run, "worker SIGKILL x5, 2 s", sigkills))


def test_frozen_listeners(server, report):
    with Run(server.dsn, server.dsn) as run:

        def freeze() -> None:
            with psycopg.connect(server.dsn, autocommit=True) as conn:
                pids = [
                    row[0]
                    for row in conn.execute(
                        "SELECT pid FROM pg_stat_activity WHERE query LIKE 'LISTEN%%'"
                    )
                ]
            for pid in pids:
                os.kill(pid, signal.SIGSTOP)
            try:
                _pause(15)
            finally:
                for pid in pids:
                    os.kill(pid, signal.SIGCONT)

        report(faulted(run, "LISTEN backends frozen 15 s", freeze))


def test_through_pgbouncer_in_transaction_mode(server, report):
    with pgbouncer(server.dsn) as bouncer:
        pooled = make_conninfo(bouncer, dbname="postgres")
        args = ("--pooler", "--listen-dsn", server.dsn)
        with Run(server.dsn, pooled, args) as run:
            report(
                faulted(
                    run,
                    "PgBouncer, backends killed",
                    lambda: kill_backends(server.dsn, "query NOT LIKE 'LISTEN%%'"),
                )
            )


def _pause(seconds: float) -> None:
    """The fault's own length."""
    threading.Event().wait(seconds)
