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
from typing_extensions import Self

from ..acceptance import servers
from ..acceptance.ledger_executors import LEDGER_APPLICATION
from ..pgbouncer import pgbouncer
from .scenario import Run, fault_while_holding_tasks, faulted, results_of_runs_fenced_off

pytestmark = pytest.mark.chaos


@pytest.fixture
def server():
    with servers.own_server(migrated=True) as own:
        yield own


def kill_backends(dsn: str, which: str = "true") -> None:
    with psycopg.connect(dsn, autocommit=True) as killer:
        killer.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND backend_type = 'client backend' AND " + which
        )


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
    assert figures.back_to_90_s is not None and figures.back_to_90_s < 10, (
        f"{figures.line()}; {figures.trace}"
    )


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


def test_every_connection_slot_taken(server, report):
    """max_connections: an outsider holds every slot and the queue's backends are
    killed, so that nothing can reconnect until the outsider lets go."""

    def exhaust() -> None:
        with ConnectionHog(server.dsn) as hog:
            for _ in range(3):  # the freed slots are the hog's before anyone else's
                hog.kill_the_others()
                hog.take_every_slot()
            _pause(10)

    with Run(server.dsn, server.dsn) as run:
        report(faulted(run, "every slot taken 10 s", exhaust))


class ConnectionHog:
    """Connections of an outsider, opened until the server refuses another one."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.held: list[psycopg.Connection] = []

    def __enter__(self) -> Self:
        self.take_every_slot()
        assert self.held, "not even one connection"
        return self

    def __exit__(self, *exc_info: object) -> None:
        for conn in self.held:
            conn.close()

    def take_every_slot(self) -> None:
        try:
            while len(self.held) < 1000:
                self.held.append(psycopg.connect(self.dsn, autocommit=True, connect_timeout=2))
        except psycopg.OperationalError:
            pass

    def kill_the_others(self) -> None:
        """Kill the queue's connections; the ledger's are the test's instrument."""
        mine = [conn.info.backend_pid for conn in self.held]
        self.held[0].execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE backend_type = 'client backend' AND pid <> ALL (%s) "
            "AND application_name <> %s",
            [mine, LEDGER_APPLICATION],
        )


def test_a_worker_stopped_past_its_lease(server, report):
    """A SIGSTOPped worker's tasks run elsewhere after the lease; when it resumes,
    fencing refuses its late results."""
    with Run(server.dsn, server.dsn) as run:
        paused = run.workers[0]
        window: list[float] = []
        held: list[int] = []

        def stop_and_resume() -> None:
            window.append(time.time())
            _, stopped_holding = fault_while_holding_tasks(
                server.dsn,
                paused.pid,
                lambda: paused.send_signal(signal.SIGSTOP),
                lambda: paused.send_signal(signal.SIGCONT),
            )
            held.extend(stopped_holding)
            try:
                _pause(12)  # over twice the lease (5 s)
            finally:
                paused.send_signal(signal.SIGCONT)

        figures = faulted(run, "worker SIGSTOP 12 s", stop_and_resume)
        report(figures)
        assert held, "the worker was never stopped while it held a task"
        assert not results_of_runs_fenced_off(server.dsn, paused.pid, window[0])


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
