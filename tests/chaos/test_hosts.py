"""Worker processes on hosts of their own (network namespaces, ``hosts.py``)
against one server: a fed queue drained from two hosts, and one host's link cut
mid-run and restored. Skipped where namespaces cannot be made (not root)."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from ..acceptance import servers
from ..acceptance.servers import OwnServer
from ..acceptance.workers import poll
from . import hosts
from .scenario import (
    Run,
    fault_while_holding_tasks,
    faulted,
    results_of_runs_fenced_off,
    wait_for_steady_rate,
)

pytestmark = pytest.mark.chaos
CUT_S = 12  # over twice the workers' lease (5 s)
NOTICE_S = 40


class HostsRun(Run):
    """A fed queue whose worker processes run one to a host, each reaching the
    server and recording its runs over its own link."""

    def __init__(self, server: OwnServer, net: hosts.Network) -> None:
        self.net, self.server = net, server
        super().__init__(server.dsn, server.dsn)

    def worker_command(self, index: int) -> list[str]:
        command = super().worker_command(index)
        command[command.index("--dsn") + 1] = self.ledger_dsn(index)
        return self.net.hosts[index].command(command)

    def ledger_dsn(self, index: int) -> str:
        return self.net.dsn(self.server, self.net.hosts[index])


@pytest.fixture
def net():
    try:
        with servers.own_server(migrated=True) as server, hosts.network(2) as net:
            net.serve(server)
            yield server, net
    except hosts.HostsUnavailable as unavailable:
        pytest.skip(str(unavailable))


def test_two_hosts_drain_a_fed_queue_each_over_its_own_link(net, report):
    server, network = net
    with HostsRun(server, network) as run:
        wait_for_steady_rate(run)
        addresses = client_addresses(server.dsn)
        now = time.monotonic()
        report(run.figures("two hosts, no fault", now, now))
        ran = runs_by_pid(server.dsn)
    # The server sees the hosts at their own addresses (the test's own
    # connections come over its socket), and each host's worker ran tasks.
    assert addresses == {f"{hosts.SUBNET}.{n}.2" for n in (1, 2)}
    assert all(ran.get(worker.pid, 0) > 0 for worker in run.workers)


def test_a_host_cut_off_mid_run_loses_nothing_and_its_late_results_are_refused(net, report, say):
    """The cut host's tasks run on the other after the lease; when its link is
    back, its results of runs begun before the cut are refused by fencing."""
    server, network = net
    with HostsRun(server, network) as run:
        cut_host, cut_worker = network.hosts[0], run.workers[0]
        cut: dict[str, object] = {}

        def cut_and_restore() -> None:
            at, held = fault_while_holding_tasks(
                server.dsn,
                cut_worker.pid,
                lambda: network.cut(cut_host),
                lambda: network.restore(cut_host),
            )
            cut.update(at=at, held=held)
            try:
                threading.Event().wait(CUT_S)
            finally:
                network.restore(cut_host)
                cut["restored"] = time.time()

        report(faulted(run, f"a host's link cut {CUT_S} s", cut_and_restore))
        held, cut_at = cut["held"], cut["at"]
        assert held, "the host was never cut while its worker held a task"
        moved = seconds_until_run_elsewhere(server.dsn, held, cut_worker.pid, cut_at)
        say(f"  {len(held)} tasks held at the cut ran on the other host {moved:.1f} s after it")
        # The cut host speaks again: it heartbeats after the link is back.
        poll(lambda: heartbeat_after(server.dsn, cut_worker.pid, cut["restored"]), timeout=60)
        assert not results_of_runs_fenced_off(server.dsn, cut_worker.pid, cut_at)


def test_a_host_cut_off_for_long_sees_its_outage_and_says_so(net, report, say):
    """A worker whose link stays down learns of it within a bound: its sockets
    give up on data the server never acknowledged (by default the kernel tries
    for about 15 minutes)."""
    server, network = net
    with HostsRun(server, network) as run:
        cut_host, log = network.hosts[0], run.worker_log(0)
        noticed: list[float] = []

        def cut_until_noticed() -> None:
            network.cut(cut_host)
            start = time.monotonic()
            try:
                poll(lambda: "lost the database" in log.read_text(), timeout=NOTICE_S)
                noticed.append(time.monotonic() - start)
            finally:
                network.restore(cut_host)

        report(faulted(run, "a host's link cut until noticed", cut_until_noticed))
        say(f"  the cut worker logged its outage {noticed[0]:.1f} s after the cut")


def seconds_until_run_elsewhere(dsn: str, ids: list[int], pid: int, since: float) -> float:
    """From ``since`` until the last of ``ids`` started on a worker other than
    ``pid``. A task whose completion was already on its way when the link went
    down is finished by ``pid`` itself and need not run elsewhere."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        finished_at_cut = {
            row[0]
            for row in conn.execute(
                "SELECT t.id FROM omnispindle.tasks t WHERE t.id = ANY (%(ids)s) "
                "AND (t.result->>'pid')::int = %(pid)s "
                "AND NOT EXISTS (SELECT FROM test_ledger l WHERE l.task_id = t.id "
                "AND l.pid <> %(pid)s)",
                {"ids": ids, "pid": pid},
            )
        }
        moved = [task_id for task_id in ids if task_id not in finished_at_cut]
        row = conn.execute(
            "SELECT count(DISTINCT task_id), max(started) FROM test_ledger "
            "WHERE task_id = ANY (%s) AND pid <> %s",
            [moved, pid],
        ).fetchone()
    assert moved, "every task held at the cut was finished by the cut host"
    assert row[0] == len(moved), "a task held at the cut never ran elsewhere"
    return row[1] - since


def heartbeat_after(dsn: str, pid: int, since: float) -> bool:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT max(extract(epoch FROM last_heartbeat_at)) FROM omnispindle.workers "
            "WHERE pid = %s",
            [pid],
        ).fetchone()
    return row[0] is not None and row[0] > since


def client_addresses(dsn: str) -> set[str]:
    """The addresses the server's client connections come from (none for its socket)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT DISTINCT host(client_addr) FROM pg_stat_activity "
            "WHERE backend_type = 'client backend' AND client_addr IS NOT NULL"
        ).fetchall()
    return {row[0] for row in rows}


def runs_by_pid(dsn: str) -> dict[int, int]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return dict(conn.execute("SELECT pid, count(*) FROM test_ledger GROUP BY 1").fetchall())
