"""One chaos scenario: worker processes drain a fed queue on a server of the
test's own while a fault is caused; a ledger of every execution and the
producer's own record tell what was lost or run twice."""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from typing_extensions import Self

from omnispindle import DatabaseUnavailableError, TaskQueue, TaskQueueClient

from ..acceptance.workers import ROOT, poll, worker_env

BATCH = 50
OFFERED_PER_S = 500
SAMPLE_S = 0.25
DEADLINE = 180
AFTER_TRACE_S = 10
AFTER_FAULT_S = 10


@dataclass
class Figures:
    """What a scenario measured."""

    scenario: str
    submitted: int
    refused: int  # submit calls that raised a typed error
    succeeded: int
    lost: int
    duplicates: int
    back_to_90_s: float | None
    unfinished: dict[str, int] = field(default_factory=dict)  # the others, by state
    trace: str = ""  # the rate before the fault and each second after it, for a failure

    def line(self) -> str:
        back = "-" if self.back_to_90_s is None else f"{self.back_to_90_s:.1f} s"
        others = f"  not succeeded {self.unfinished}" if self.unfinished else ""
        return (
            f"{self.scenario:<28} submitted {self.submitted:>6}  refused {self.refused:>3}  "
            f"succeeded {self.succeeded:>6}  lost {self.lost}  duplicates {self.duplicates:>3}  "
            f"back to 90 % {back}{others}"
        )


@dataclass
class Run:
    """A fed queue on ``dsn`` with worker processes (``worker_args`` each)."""

    dsn: str
    worker_dsn: str
    worker_args: tuple[str, ...] = ()
    workers: list[subprocess.Popen[str]] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)
    refused_batches: list[int] = field(default_factory=list)
    samples: list[tuple[float, int]] = field(default_factory=list)
    submits: list[float] = field(default_factory=list)  # when each stored batch returned
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS test_ledger (task_id bigint NOT NULL, "
                "pid integer NOT NULL, "
                "started double precision DEFAULT extract(epoch FROM clock_timestamp()))"
            )
        self.queue = TaskQueue(self.dsn)
        self.client = TaskQueueClient(local_queue=self.queue)
        self._logs = tempfile.TemporaryDirectory(prefix="omnispindle-chaos-")

    def start_worker(self) -> subprocess.Popen[str]:
        index = len(self.workers)
        log = self.worker_log(index).open("w")
        worker = subprocess.Popen(
            self.worker_command(index), env=worker_env(self.ledger_dsn(index)), cwd=ROOT,
            stdout=subprocess.DEVNULL, stderr=log, text=True,
        )  # fmt: skip
        self.workers.append(worker)
        return worker

    def worker_log(self, index: int) -> Path:
        """Where the ``index``-th worker process writes its log."""
        return Path(self._logs.name) / f"worker-{index}.log"

    def worker_command(self, index: int) -> list[str]:
        """The command line of the ``index``-th worker process."""
        return [sys.executable, "-m", "omnispindle", "--log-level", "WARNING", "worker",
                "--dsn", self.worker_dsn, "--executors", "tests.acceptance.ledger_executors",
                "--concurrency", "8", "--lease-timeout", "5", "--heartbeat-interval", "1",
                "--sweep-interval", "0.5", "--poll-interval", "0.5", *self.worker_args]  # fmt: skip

    def ledger_dsn(self, index: int) -> str:
        """Where the ``index``-th worker process records its runs."""
        return self.dsn

    def __enter__(self) -> Self:
        for _ in range(2):
            self.start_worker()
        self._threads = [
            threading.Thread(target=self._produce, daemon=True),
            threading.Thread(target=self._sample, daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)
        for worker in self.workers:
            if worker.poll() is None:
                worker.terminate()
        for worker in self.workers:
            try:
                worker.wait(60)
            except subprocess.TimeoutExpired:
                worker.kill()
        self.queue.shutdown()
        self._logs.cleanup()

    def _produce(self) -> None:
        batch = 0
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.ids += self.client.submit_batch(
                    [{"task_type": "nap", "parameters": {"batch": batch}}] * BATCH
                )
                self.submits.append(time.monotonic())
            except DatabaseUnavailableError:
                self.refused_batches.append(batch)
            batch += 1
            self._stop.wait(max(0.0, BATCH / OFFERED_PER_S - (time.monotonic() - started)))

    def _sample(self) -> None:
        """Executions so far, from the ledger, every SAMPLE_S seconds."""
        conn: psycopg.Connection | None = None
        while not self._stop.wait(SAMPLE_S):
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=2)
                count = conn.execute("SELECT count(*) FROM test_ledger").fetchone()
                self.samples.append((time.monotonic(), count[0] if count else 0))
            except psycopg.Error:
                conn = None

    def executed(self) -> int:
        return self.samples[-1][1] if self.samples else 0

    def steady(self, seconds: float) -> None:
        """Let the run go on for ``seconds`` (the scenario's own length)."""
        self._stop.wait(seconds)

    def rate(self, start: float, end: float) -> float:
        inside = [(t, n) for t, n in self.samples if start <= t <= end]
        if len(inside) < 2:
            return 0.0
        return (inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0])

    def figures(self, scenario: str, fault_start: float, fault_end: float) -> Figures:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)
        self.client.wait_for_batch(self.ids, timeout=DEADLINE)
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            runs = dict(
                conn.execute("SELECT task_id, count(*) FROM test_ledger GROUP BY 1").fetchall()
            )
            states = dict(
                conn.execute(
                    "SELECT state::text, array_agg(id) FROM omnispindle.tasks "
                    "WHERE id = ANY (%s) GROUP BY 1",
                    [self.ids],
                ).fetchall()
            )
            succeeded = set(states.pop("succeeded", []))
            refused_stored = conn.execute(
                "SELECT count(*) FROM omnispindle.tasks "
                "WHERE (parameters->>'batch')::int = ANY (%s)",
                [self.refused_batches],
            ).fetchone()[0]
        assert refused_stored == 0, "a refused submit call left tasks"
        return Figures(
            scenario=scenario,
            submitted=len(self.ids),
            refused=len(self.refused_batches),
            succeeded=len(succeeded),
            # Never run, or run and not stored as succeeded.
            lost=sum(1 for task_id in self.ids if task_id not in runs or task_id not in succeeded),
            duplicates=sum(count - 1 for count in runs.values()),
            back_to_90_s=self._back_to_90(fault_start, fault_end),
            unfinished={state: len(ids) for state, ids in states.items()},
            trace=self._trace(fault_start, fault_end),
        )

    def _rate_before(self, fault_start: float) -> float:
        return self.rate(fault_start - 5, fault_start)

    def _trace(self, fault_start: float, fault_end: float) -> str:
        before = self._rate_before(fault_start)
        after = [
            f"{self.rate(fault_end + second, fault_end + second + 1.0):.0f}"
            for second in range(int(AFTER_TRACE_S))
        ]
        stored = [
            str(BATCH * sum(1 for t in self.submits if 0 <= t - fault_end - second < 1.0))
            for second in range(int(AFTER_TRACE_S))
        ]
        return (
            f"before {before:.0f}/s; each second after: run {' '.join(after)}; "
            f"submitted {' '.join(stored)}"
        )

    def _back_to_90(self, fault_start: float, fault_end: float) -> float | None:
        """Seconds from the fault's end until a second's rate is 90 % of the rate
        before the fault; None if it never was."""
        before = self._rate_before(fault_start)
        for t, _ in self.samples:
            if t >= fault_end and self.rate(t, t + 1.0) >= 0.9 * before:
                return max(0.0, t - fault_end)
        return None


def wait_for_steady_rate(run: Run) -> None:
    """Until the workers run at the offered rate for a few seconds."""
    poll(lambda: run.executed() > 2 * OFFERED_PER_S, timeout=60)
    run.steady(5)


def median_rate(run: Run) -> float:
    return statistics.median(
        run.rate(t, t + 1) for t, _ in run.samples[-20:] if run.rate(t, t + 1) > 0
    )


def faulted(run: Run, scenario: str, cause: Callable[[], None]) -> Figures:
    """Once the run is steady, causes the fault (``cause`` returns when it has
    ended), lets the run go on, and returns its figures."""
    wait_for_steady_rate(run)
    start = time.monotonic()
    cause()
    end = time.monotonic()
    run.steady(AFTER_FAULT_S)
    return run.figures(scenario, start, end)


def fault_while_holding_tasks(
    dsn: str, pid: int, cause: Callable[[], None], undo: Callable[[], None]
) -> tuple[float, list[int]]:
    """Causes a fault at a moment worker process ``pid`` holds running tasks:
    when (by this machine's clock), and their ids. A try that finds it holding
    none is undone; after 100 such tries, the ids are empty."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        for _ in range(100):
            at = time.time()
            cause()
            held = [
                row[0]
                for row in conn.execute(
                    "SELECT t.id FROM omnispindle.tasks t "
                    "JOIN omnispindle.workers w ON w.id = t.worker_id "
                    "WHERE t.state = 'running' AND w.pid = %s",
                    [pid],
                )
            ]
            if held:
                return at, held
            undo()
            threading.Event().wait(0.05)
    return time.time(), []


def results_of_runs_fenced_off(dsn: str, pid: int, stopped_at: float) -> list[int]:
    """Tasks whose stored result is from ``pid``'s run begun before it stopped,
    though another worker ran them again: a late result fencing should refuse."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT t.id FROM omnispindle.tasks t "
            "WHERE (t.result->>'pid')::int = %(pid)s "
            "AND EXISTS (SELECT FROM test_ledger l WHERE l.task_id = t.id AND l.pid <> %(pid)s) "
            "AND NOT EXISTS (SELECT FROM test_ledger l WHERE l.task_id = t.id "
            "AND l.pid = %(pid)s AND l.started >= %(stopped)s)",
            {"pid": pid, "stopped": stopped_at},
        ).fetchall()
    return [row[0] for row in rows]
