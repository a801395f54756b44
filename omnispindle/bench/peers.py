"""The ``omnispindle bench`` scenarios run on two peer libraries, procrastinate and pgqueuer.

Each peer runs in a database of its own on the given server (``omnispindle_bench_<peer>``,
created when missing). Before every run its ``public`` schema is dropped and the peer's
schema installed afresh with the peer's own API, so no run sees another's rows (and two
benchmarks of one peer on one server must not overlap). The task is a no-op coroutine,
the cheapest task either peer runs; workers are separate processes.

Settings:

- procrastinate: ``procrastinate worker --concurrency C`` with its defaults otherwise
  (LISTEN/NOTIFY on, 5 s polling fallback, finished jobs kept). Bulk enqueue is one
  ``Task.batch_defer`` call, single enqueue ``Task.defer``, over its synchronous psycopg
  connector.
- pgqueuer: a ``QueueManager`` run by ``pgqueuer.run`` (what ``pgq run`` does; the 1.6 CLI
  cannot parse its own ``--log-level`` default) on uvloop, over its asyncpg driver, which
  its CLI prefers (its psycopg driver, the fallback without asyncpg, holds the connection
  for up to a second while waiting for notifications, so each wake-up waits that long).
  ``batch_size=C//2, max_concurrent_tasks=C``: its performance guide advises large batches
  for short jobs and requires the cap to be at least twice the batch, so half the
  concurrency is the largest batch the cap allows. Durability and autovacuum settings are
  its defaults. Bulk enqueue is one ``SyncQueries.enqueue`` call with lists, single
  enqueue the same with scalars, over psycopg.

Measurements:

- drain: the workers start on an empty queue, so that their start-up is not in the CPU
  figures, and are waited for until each one listens (procrastinate: its LISTEN
  connection; pgqueuer: a probe task only that worker takes). Then the worker CPU is
  read, the N tasks go in with the bulk path, the server CPU is
  read, and the remaining rows are polled every 20 ms. The rate is N over the span from
  the first start to the last success as the peer stamps them in its own tables.
- enqueue: bulk is one batch call of N tasks; single is N/10 (at least 1,000) calls, each
  its own transaction; no worker runs.
- latency: one idle, listening worker; each sample enqueues a probe and waits for its
  start, which the probe writes to ``bench_latency``; latency is start minus the time
  the enqueue returned (its commit), samples about 10 ms apart.
- steady: as ``omnispindle.bench.steady``, 1 ms ``asyncio.sleep`` naps fed in one bulk
  call every 10 ms (at a rate, or to a depth of jobs queued and not yet picked); the
  delays come from the peer's own stamps of each job's enqueue and start
  (procrastinate's events, pgqueuer's log), by the database's clock.

CPU is user plus system time from the kernel: of the worker processes, and of every
process of the server when it runs on this machine (``None`` otherwise).
"""

from __future__ import annotations

import asyncio
import importlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from functools import cache
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import dict_row

from omnispindle.bench import peer_tasks
from omnispindle.bench.feeding import GRACE_S, check_steady, feed, pace_of, steady_row
from omnispindle.bench.queries import statement
from omnispindle.bench.workflows import BenchmarkError, stop_processes, wait_for

PEERS = ("procrastinate", "pgqueuer")
SCENARIOS = ("drain", "enqueue", "latency", "steady")
WORKER_APPLICATION = "omnispindle_bench_peer"
LATENCY_SAMPLES = 200
LATENCY_SPACING_S = 0.010
POLL_INTERVAL_S = 0.020
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
LOCAL_HOSTS = ("", "localhost", "127.0.0.1", "::1")


class PeerUnavailableError(BenchmarkError):
    """A peer cannot be benchmarked: unknown, not installed, or asked for an unknown scenario."""


def available_peers() -> list[str]:
    """The peers whose package imports."""
    return [peer for peer in PEERS if _importable(peer)]


def _importable(package: str) -> bool:
    try:
        importlib.import_module(package)
    except ImportError:
        return False
    return True


def run_peer(
    peer: str,
    scenario: str,
    dsn: str,
    *,
    tasks: int = 20_000,
    runs: int = 3,
    workers: int = 2,
    concurrency: int = 16,
    rate: float = 1000.0,
    seconds: float = 60.0,
    depth: int | None = None,
) -> dict[str, Any]:
    """Run ``scenario`` on ``peer`` in its own database on ``dsn``'s server; figures are
    medians of ``runs`` (steady: one run at ``rate``, or to ``depth``, for ``seconds``)."""
    adapter = _adapter(peer, scenario)
    if min(tasks, runs, workers, concurrency) < 1:
        raise BenchmarkError("tasks, runs, workers and concurrency must all be at least 1")
    with peer_exclusively(dsn, peer):
        target = prepare_database(dsn, peer)
        if scenario == "steady":
            return {
                "system": peer,
                "scenario": "steady",
                "workers": workers,
                "concurrency": concurrency,
                "seconds": seconds,
                **({} if depth is None else {"depth": depth}),
                **_steady_once(adapter, target, workers, concurrency, rate, seconds, depth),
            }
        if scenario == "drain":
            samples = [
                _drain_once(adapter, target, tasks, workers, concurrency) for _ in range(runs)
            ]
            return {
                "system": peer,
                "scenario": "drain",
                "tasks": tasks,
                "workers": workers,
                **medians(samples),
            }
        if scenario == "enqueue":
            enqueues = [_enqueue_once(adapter, target, tasks) for _ in range(runs)]
            return {"system": peer, "scenario": "enqueue", "tasks": tasks, **medians(enqueues)}
        latencies = [_latency_once(adapter, target, concurrency) for _ in range(runs)]
        return {
            "system": peer,
            "scenario": "latency",
            "samples": LATENCY_SAMPLES,
            **medians(latencies),
        }


@contextmanager
def peer_exclusively(dsn: str, peer: str) -> Iterator[None]:
    """Hold the server-wide lock of ``peer``'s database: runs share it, so they take turns."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(statement("peer_lock"), {"peer": peer})
        yield  # the session's lock goes with its connection


def _adapter(peer: str, scenario: str) -> _Peer:
    if peer not in PEERS:
        raise PeerUnavailableError(f"unknown peer {peer!r}; the peers are {', '.join(PEERS)}")
    if scenario not in SCENARIOS:
        raise PeerUnavailableError(
            f"unknown scenario {scenario!r} for {peer}; the scenarios are {', '.join(SCENARIOS)}"
        )
    for package in (peer, "psutil"):
        if not _importable(package):
            raise PeerUnavailableError(
                f"{package} is not installed: pip install 'omnispindle[bench]' to benchmark {peer}"
            )
    return _ADAPTERS[peer]()


def medians(samples: Sequence[Mapping[str, float | None]]) -> dict[str, float | None]:
    """Per key, the median of the runs' figures (None where a run had none)."""
    merged: dict[str, float | None] = {}
    for key in samples[0]:
        values = [value for s in samples if (value := s[key]) is not None]
        merged[key] = round(statistics.median(values), 4) if values else None
    return merged


# --- databases -------------------------------------------------------------------------


def peer_database(peer: str) -> str:
    return f"omnispindle_bench_{peer}"


def prepare_database(dsn: str, peer: str) -> str:
    """Create ``peer``'s database on ``dsn``'s server when missing; return its DSN."""
    name = peer_database(peer)
    with psycopg.connect(dsn, autocommit=True) as conn:
        if not fetch_value(conn, "peer_database_exists", {"name": name}):
            create = sql.SQL(statement("peer_create_database")).format(
                database=sql.Identifier(name)
            )
            try:
                conn.execute(create)
            except psycopg.errors.DuplicateDatabase:
                pass  # created meanwhile by a concurrent run
    return make_conninfo(dsn, dbname=name)


def reset_schema(dsn: str, adapter: _Peer) -> None:
    """Drop everything in the peer's database and install the peer's schema afresh."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        for name in (
            "peer_drop_public_schema",
            "peer_create_public_schema",
            "peer_create_latency_table",
        ):
            conn.execute(statement(name))
    adapter.install(dsn)


def fetch_value(
    conn: psycopg.Connection[Any], name: str, params: dict[str, Any] | None = None
) -> Any:
    """The first column of the first row of the named statement.

    Raises:
        BenchmarkError: the statement returned no row.
    """
    row = conn.execute(statement(name), params or {}).fetchone()
    if row is None:
        raise BenchmarkError(f"{name} returned no row")
    return row[0]


# --- CPU -------------------------------------------------------------------------------


def process_cpu_seconds(pids: Iterable[int]) -> float:
    """User plus system CPU seconds of ``pids`` and their reaped children; gone pids count 0."""
    import psutil

    total = 0.0
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system + times.children_user + times.children_system
    return total


def postgres_cpu_seconds(dsn: str) -> float | None:
    """CPU seconds of every process of ``dsn``'s server, or None when it runs elsewhere.

    The postmaster's reaped-children times keep the CPU of backends that exited.
    """
    postmaster = _postmaster_pid(dsn)
    if postmaster is None:
        return None
    import psutil

    try:
        children = psutil.Process(postmaster).children()
    except psutil.NoSuchProcess:
        return None
    return process_cpu_seconds([postmaster, *(child.pid for child in children)])


@cache
def _postmaster_pid(dsn: str) -> int | None:
    host = str(conninfo_to_dict(dsn).get("host") or "")
    if host not in LOCAL_HOSTS and not host.startswith("/"):
        return None
    import psutil

    with psycopg.connect(dsn) as conn:
        backend = fetch_value(conn, "peer_backend_pid")
        try:  # while connected, so that the backend is still there
            process = psutil.Process(backend)
            parent = process.ppid() if process.name() == "postgres" else 0
        except psutil.NoSuchProcess:
            parent = 0  # a server in another machine or namespace
    return parent or None


# --- worker processes ------------------------------------------------------------------


class WorkerPool:
    """Worker processes of one peer, whose output goes to one scratch file for error messages."""

    def __init__(self, processes: list[subprocess.Popen[bytes]], log: Any) -> None:
        self.processes = processes
        self.log = log

    @property
    def pids(self) -> list[int]:
        return [process.pid for process in self.processes]

    def wait(
        self,
        condition: Callable[[], bool],
        timeout: float,
        what: str,
        interval: float = POLL_INTERVAL_S,
    ) -> None:
        """``wait_for`` that fails at once, with the workers' output, when a worker died."""

        def checked() -> bool:
            self.check_alive()
            return condition()

        wait_for(checked, timeout, what, interval)

    def check_alive(self) -> None:
        for process in self.processes:
            if process.poll() is not None:
                self.log.seek(0)
                tail = self.log.read()[-2000:].decode(errors="replace")
                raise BenchmarkError(
                    f"a benchmark worker exited with code {process.returncode}: {tail}"
                )


@contextmanager
def worker_pool(adapter: _Peer, dsn: str, count: int, concurrency: int) -> Iterator[WorkerPool]:
    """Start ``count`` worker processes of the peer; stop them on exit."""
    worker_dsn = make_conninfo(dsn, application_name=WORKER_APPLICATION)
    processes: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryFile() as log:
        try:
            for index in range(count):
                env = {
                    **os.environ,
                    peer_tasks.DSN_ENV: worker_dsn,
                    peer_tasks.WORKER_ENV: str(index),
                }
                processes.append(
                    subprocess.Popen(
                        adapter.worker_command(concurrency),
                        env=env,
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=log,
                    )
                )
            yield WorkerPool(processes, log)
        finally:
            stop_processes(processes, STOP_TIMEOUT_S)


@contextmanager
def ready_peer(
    adapter: _Peer, dsn: str, workers: int, concurrency: int
) -> Iterator[tuple[psycopg.Connection[Any], Any, WorkerPool]]:
    """The peer's schema afresh, an autocommit connection, its client and ``workers``
    worker processes, once every worker is ready."""
    reset_schema(dsn, adapter)
    with ExitStack() as stack:
        conn = stack.enter_context(psycopg.connect(dsn, autocommit=True))
        client = stack.enter_context(adapter.client(dsn))
        pool = stack.enter_context(worker_pool(adapter, dsn, workers, concurrency))
        adapter.wait_ready(conn, client, pool)
        yield conn, client, pool


def wait_until_run(
    conn: psycopg.Connection[Any], adapter: _Peer, pool: WorkerPool, tasks: float, what: str
) -> None:
    """Wait until the peer has no task queued or running, allowing for ``tasks`` of them."""
    pool.wait(lambda: not fetch_value(conn, adapter.remaining), 60 + tasks / 50, what)


# --- scenarios -------------------------------------------------------------------------


def _drain_once(
    adapter: _Peer, dsn: str, tasks: int, workers: int, concurrency: int
) -> dict[str, float | None]:
    """One drain of ``tasks`` no-ops by ``workers`` idle, listening workers."""
    with ready_peer(adapter, dsn, workers, concurrency) as (conn, client, pool):
        worker_before = process_cpu_seconds(pool.pids)
        client.bulk(tasks)
        # Read after the commit: the enqueue's own server CPU is not the drain's.
        server_before = postgres_cpu_seconds(dsn)
        wait_until_run(conn, adapter, pool, tasks, f"{adapter.name} draining {tasks} tasks")
        worker_cpu = process_cpu_seconds(pool.pids) - worker_before
        server_after = postgres_cpu_seconds(dsn)
        done = fetch_value(conn, adapter.done, {"tasks": [peer_tasks.NOOP]})
        seconds = fetch_value(conn, adapter.drain_seconds, {"task": peer_tasks.NOOP})
    if done != tasks or not seconds:
        raise BenchmarkError(f"{adapter.name} finished {done} of {tasks} tasks")
    per_1k = 1000 / tasks
    server_cpu = (
        None if server_before is None or server_after is None else server_after - server_before
    )
    return {
        "tasks_per_s": tasks / seconds,
        "worker_cpu_s_per_1k": worker_cpu * per_1k,
        "pg_cpu_s_per_1k": None if server_cpu is None else server_cpu * per_1k,
    }


def _enqueue_once(adapter: _Peer, dsn: str, tasks: int) -> dict[str, float]:
    """One bulk call of ``tasks`` tasks, then N/10 (at least 1,000) single enqueues."""
    reset_schema(dsn, adapter)
    singles = max(1_000, tasks // 10)
    with adapter.client(dsn) as client:
        started = time.perf_counter()
        client.bulk(tasks)
        bulk_s = time.perf_counter() - started
        started = time.perf_counter()
        for _ in range(singles):
            client.single()
        single_s = time.perf_counter() - started
    return {"bulk_per_s": tasks / bulk_s, "single_per_s": singles / single_s}


def _steady_once(
    adapter: _Peer,
    dsn: str,
    workers: int,
    concurrency: int,
    rate: float,
    seconds: float,
    depth: int | None,
) -> dict[str, Any]:
    """Naps fed at ``rate`` a second (or to ``depth``) for ``seconds`` while ``workers``
    run them, as in ``omnispindle.bench.steady``; waits until the last one has run."""
    check_steady(rate, seconds, depth)
    with ready_peer(adapter, dsn, workers, concurrency) as (conn, client, pool):
        fed = feed(
            client.naps,
            pace_of(rate, depth, lambda: fetch_value(conn, adapter.queued)),
            seconds,
            lambda: fetch_value(conn, adapter.table_bytes),
            lambda: fetch_value(conn, "bench_wal_position"),
        )
        wait_until_run(
            conn, adapter, pool, fed.submitted, f"{adapter.name} running the steady run's naps"
        )
        conn.execute(statement("peer_create_steady_run"))
        conn.execute(statement(adapter.steady_run), {"task": peer_tasks.NAP})
        found = (
            conn.cursor(row_factory=dict_row)
            .execute(statement("peer_steady_figures"), {"grace": GRACE_S})
            .fetchone()
        )
    if found is None:
        raise BenchmarkError(f"{seconds} s of feeding gave {adapter.name} no task")
    return steady_row(found, fed)


def _latency_once(adapter: _Peer, dsn: str, concurrency: int) -> dict[str, float]:
    """``LATENCY_SAMPLES`` probes through one idle, listening worker; p50 and p99 in ms."""
    with ready_peer(adapter, dsn, 1, concurrency) as (conn, client, pool):
        latencies = [
            _latency_sample(conn, client, pool, sample) for sample in range(LATENCY_SAMPLES)
        ]
    percentiles = statistics.quantiles(latencies, n=100, method="inclusive")
    return {"p50_ms": percentiles[49] * 1000, "p99_ms": percentiles[98] * 1000}


def _latency_sample(conn: psycopg.Connection, client: Any, pool: WorkerPool, sample: int) -> float:
    """Seconds from the probe's enqueue commit to its start; returns ``LATENCY_SPACING_S`` after
    the enqueue at the earliest, so that samples do not queue behind each other."""
    next_sample = time.monotonic() + LATENCY_SPACING_S
    client.probe(sample)
    committed = time.time()
    started: list[float] = []

    def seen() -> bool:
        row = conn.execute(statement("peer_latency_started"), {"id": sample}).fetchone()
        if row:
            started.append(row[0])
        return bool(row)

    pool.wait(seen, 30, f"latency probe {sample}", interval=0.002)
    time.sleep(max(0.0, next_sample - time.monotonic()))
    return started[0] - committed


# --- the peers -------------------------------------------------------------------------


class _Peer:
    """What differs between peers: schema, worker command, client and readiness."""

    name: str
    remaining: str  # statements in sql/bench/peers.sql
    queued: str
    done: str
    drain_seconds: str
    steady_run: str
    table_bytes: str

    def install(self, dsn: str) -> None:
        raise NotImplementedError

    def worker_command(self, concurrency: int) -> list[str]:
        raise NotImplementedError

    def client(self, dsn: str) -> Any:
        """A context manager yielding an object with ``bulk(n)``, ``single()``, ``probe(i)``
        and ``naps(n)``."""
        raise NotImplementedError

    def wait_ready(self, conn: psycopg.Connection, client: Any, pool: WorkerPool) -> None:
        raise NotImplementedError


class _Procrastinate(_Peer):
    name = "procrastinate"
    remaining, done, drain_seconds = (
        "procrastinate_remaining",
        "procrastinate_done",
        "procrastinate_drain_seconds",
    )
    steady_run, table_bytes = "procrastinate_steady_run", "procrastinate_table_bytes"
    queued = "procrastinate_queued"

    def install(self, dsn: str) -> None:
        with peer_tasks.procrastinate_app(dsn).open() as app:
            app.schema_manager.apply_schema()

    def worker_command(self, concurrency: int) -> list[str]:
        return [
            sys.executable,
            "-m",
            "procrastinate",
            "--app",
            f"{peer_tasks.__name__}.worker_app",
            "worker",
            "--concurrency",
            str(concurrency),
        ]

    @contextmanager
    def client(self, dsn: str) -> Iterator[Any]:
        with peer_tasks.procrastinate_app(dsn).open() as app:
            yield _ProcrastinateClient(app)

    def wait_ready(self, conn: psycopg.Connection, client: Any, pool: WorkerPool) -> None:
        # A worker LISTENs once registered and in its loop: then no notification is lost.
        pool.wait(
            lambda: (
                fetch_value(conn, "peer_listening_workers", {"application": WORKER_APPLICATION})
                >= len(pool.pids)
            ),
            READY_TIMEOUT_S,
            "every procrastinate worker listening",
        )


class _ProcrastinateClient:
    def __init__(self, app: Any) -> None:
        self.noop = app.tasks[peer_tasks.NOOP]
        self.nap = app.tasks[peer_tasks.NAP]
        self.latency = app.tasks[peer_tasks.LATENCY]

    def bulk(self, count: int) -> None:
        self.noop.batch_defer(*([{}] * count))

    def naps(self, count: int) -> None:
        self.nap.batch_defer(*([{}] * count))

    def single(self) -> None:
        self.noop.defer()

    def probe(self, sample: int) -> None:
        self.latency.defer(sample=sample)


class _Pgqueuer(_Peer):
    name = "pgqueuer"
    remaining, done, drain_seconds = (
        "pgqueuer_remaining",
        "pgqueuer_done",
        "pgqueuer_drain_seconds",
    )
    steady_run, table_bytes = "pgqueuer_steady_run", "pgqueuer_table_bytes"
    queued = "pgqueuer_queued"

    def install(self, dsn: str) -> None:
        asyncio.run(_install_pgqueuer(dsn))

    def worker_command(self, concurrency: int) -> list[str]:
        batch = max(1, concurrency // 2)
        return [
            sys.executable,
            "-m",
            peer_tasks.__name__,
            str(batch),
            str(max(concurrency, 2 * batch)),
        ]

    @contextmanager
    def client(self, dsn: str) -> Iterator[Any]:
        from pgqueuer.db import SyncPsycopgDriver
        from pgqueuer.queries import SyncQueries

        with psycopg.connect(dsn, autocommit=True) as conn:
            yield _PgqueuerClient(SyncQueries(SyncPsycopgDriver(conn)))

    def wait_ready(self, conn: psycopg.Connection, client: Any, pool: WorkerPool) -> None:
        # pgqueuer LISTENs before its first dequeue, so a worker that has run its own
        # probe task is listening; the probes are outside every measured figure.
        probes = [peer_tasks.ready_task(index) for index in range(len(pool.pids))]
        for probe in probes:
            client.queries.enqueue(probe, None)
        pool.wait(
            lambda: fetch_value(conn, self.done, {"tasks": probes}) == len(probes),
            READY_TIMEOUT_S,
            "every pgqueuer worker running its probe task",
        )


class _PgqueuerClient:
    def __init__(self, queries: Any) -> None:
        self.queries = queries

    def bulk(self, count: int) -> None:
        self.queries.enqueue([peer_tasks.NOOP] * count, [None] * count, [0] * count)

    def naps(self, count: int) -> None:
        self.queries.enqueue([peer_tasks.NAP] * count, [None] * count, [0] * count)

    def single(self) -> None:
        self.queries.enqueue(peer_tasks.NOOP, None)

    def probe(self, sample: int) -> None:
        self.queries.enqueue(peer_tasks.LATENCY, str(sample).encode())


async def _install_pgqueuer(dsn: str) -> None:
    from pgqueuer import PsycopgDriver, Queries

    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await Queries(PsycopgDriver(conn)).install()


_ADAPTERS: dict[str, type[_Peer]] = {"procrastinate": _Procrastinate, "pgqueuer": _Pgqueuer}
