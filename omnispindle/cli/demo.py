"""``omnispindle demo``: a small workflow run by three worker processes.

The demo starts its own embedded Postgres in a temporary directory, runs a
batch, a dependency chain and a task that fails once, shows progress and the
SQL views, then stops everything and removes the directory.

This module is also the workers' executors module (``EXECUTORS``), so keep
its import free of side effects.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from omnispindle._db import queries as q
from omnispindle._db.embedded import DSN_VARIABLE
from omnispindle._db.rows import TaskRecord
from omnispindle.cli.complain import complain
from omnispindle.cli.formatting import format_table
from omnispindle.client import TaskQueueClient
from omnispindle.errors import WaitTimeoutError
from omnispindle.task_queue import TaskQueue

WORKERS = 3
CONCURRENCY = 2
PROGRESS_INTERVAL = 0.5
DEADLINE_SECONDS = 120.0
STOP_TIMEOUT = 30.0
WORK_SECONDS = 0.3  # each executor pauses briefly so the progress lines show movement

STATES = ("blocked", "pending", "running", "succeeded", "failed", "cancelled")
BATCH = [
    ("sum", [1, 2, 3]),
    ("multiply", [4, 5, 6]),
    ("sum", [10, 20, 30, 40]),
    ("multiply", [2, 3, 7]),
    ("sum", [5, 8, 13, 21]),
    ("multiply", [3, 3, 3]),
]
CHAIN_INPUT = [3, 1, 4, 1, 5, 9, 2, 6]


class DemoError(Exception):
    """The demo cannot go on; the message says why."""


# Executors, run inside the worker processes.


def calculate(task_data: dict[str, Any]) -> dict[str, Any]:
    """Sum or multiply ``parameters["values"]``."""
    time.sleep(WORK_SECONDS)
    parameters = task_data["parameters"]
    result = 1 if parameters["operation"] == "multiply" else 0
    for value in parameters["values"]:
        result = result * value if parameters["operation"] == "multiply" else result + value
    return {"result": result, "pid": os.getpid()}


def fetch(task_data: dict[str, Any]) -> dict[str, Any]:
    """First chain step: stands in for loading data from elsewhere."""
    time.sleep(WORK_SECONDS)
    return {"numbers": list(task_data["parameters"]["numbers"])}


def transform(task_data: dict[str, Any]) -> dict[str, Any]:
    """Second chain step: squares the numbers its parent fetched."""
    time.sleep(WORK_SECONDS)
    return {"numbers": [n * n for n in _parent_result(task_data)["numbers"]]}


def report(task_data: dict[str, Any]) -> dict[str, Any]:
    """Last chain step: summarises its parent's numbers."""
    time.sleep(WORK_SECONDS)
    numbers = _parent_result(task_data)["numbers"]
    return {"count": len(numbers), "total": sum(numbers), "largest": max(numbers)}


def flaky(task_data: dict[str, Any]) -> dict[str, Any]:
    """Fails its first attempt, as a dropped connection would, then succeeds."""
    time.sleep(WORK_SECONDS)
    if task_data["attempt"] == 1:
        raise ConnectionError("simulated transient failure")
    return {"ok": True, "attempt": task_data["attempt"]}


def _parent_result(task_data: dict[str, Any]) -> Any:
    (result,) = task_data["dependency_results"].values()
    return result


EXECUTORS = {
    "math": calculate,
    "fetch": fetch,
    "transform": transform,
    "report": report,
    "flaky": flaky,
}


# The demo itself.


def add_commands(commands: Any, command: Callable[..., argparse.ArgumentParser]) -> None:
    """Add ``demo`` to the ``omnispindle`` subparsers."""
    command(
        commands,
        "demo",
        "run the demo on an embedded Postgres",
        lambda _args: run_demo(),
        with_dsn=False,
    )


def run_demo() -> int:
    """Run the demo; returns the process exit code (0 ok, 1 failed)."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    data_dir = tempfile.mkdtemp(prefix="omnispindle-demo-")
    try:
        print(f"Omnispindle demo: starting an embedded Postgres in {data_dir}", flush=True)
        with _without_dsn_variable():
            queue = TaskQueue(persistence_path=data_dir)
        try:
            return 0 if _run_with_queue(queue, deadline) else 1
        finally:
            queue.shutdown()
    except DemoError as exc:
        complain(f"demo failed: {exc}")
        return 1
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


@contextlib.contextmanager
def _without_dsn_variable() -> Iterator[None]:
    """Hide $OMNISPINDLE_DSN while the queue starts: the demo never touches a real database."""
    saved = os.environ.pop(DSN_VARIABLE, None)
    if saved is not None:
        print(f"(ignoring ${DSN_VARIABLE}: the demo uses its own database)")
    try:
        yield
    finally:
        if saved is not None:
            os.environ[DSN_VARIABLE] = saved


def _run_with_queue(queue: TaskQueue, deadline: float) -> bool:
    """Start workers, run the workflow, stop the workers; True if all went well."""
    workers: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for n in range(1, WORKERS + 1):
            workers[f"demo-worker-{n}"] = _spawn_worker(queue.dsn, f"demo-worker-{n}")
        _wait_for_workers(queue, workers, deadline)
        succeeded = _run_workflow(queue, workers, deadline)
        print()
        print(format_table(queue.db.run(q.inspection.queue_summary()), title="Queues"))
        print()
        print(format_table(queue.db.run(q.inspection.worker_summary()), title="Workers"))
    finally:
        stopped = _stop_workers(workers)
    print()
    print(format_table(queue.db.run(q.inspection.worker_summary()), title="Workers after shutdown"))
    return succeeded and stopped


def _spawn_worker(dsn: str, name: str) -> subprocess.Popen[bytes]:
    settings = {
        "--dsn": dsn,
        "--executors": __name__,
        "--concurrency": str(CONCURRENCY),
        "--name": name,
        "--poll-interval": str(PROGRESS_INTERVAL),
    }
    command = [sys.executable, "-m", "omnispindle", "--log-level", "WARNING", "worker"]
    command += [part for option in settings.items() for part in option]
    return subprocess.Popen(command, stdin=subprocess.DEVNULL)


def _wait_for_workers(
    queue: TaskQueue, workers: dict[str, subprocess.Popen[bytes]], deadline: float
) -> None:
    """Return once every worker process has registered in the workers table."""
    print(f"starting {len(workers)} worker processes ({CONCURRENCY} threads each)...", flush=True)
    while True:
        _check_alive(workers)
        active = [
            row for row in queue.db.run(q.inspection.worker_summary()) if row["state"] == "active"
        ]
        if len(active) == len(workers):
            break
        if time.monotonic() > deadline:
            raise DemoError(f"workers not registered within {DEADLINE_SECONDS:.0f} s")
        time.sleep(0.1)  # registration sends no notification, so poll
    pids = ", ".join(f"{name} (pid {proc.pid})" for name, proc in workers.items())
    print(f"workers ready: {pids}")


def _check_alive(workers: dict[str, subprocess.Popen[bytes]]) -> None:
    for name, process in workers.items():
        if process.poll() is not None:
            raise DemoError(f"worker {name} exited early with code {process.returncode}")


def _run_workflow(
    queue: TaskQueue, workers: dict[str, subprocess.Popen[bytes]], deadline: float
) -> bool:
    """Submit the tasks, wait with progress, print results; True if all succeeded."""
    client = TaskQueueClient(local_queue=queue, poll_interval=PROGRESS_INTERVAL)
    batch_ids = client.submit_batch(
        [
            {"task_type": "math", "parameters": {"operation": op, "values": values}}
            for op, values in BATCH
        ]
    )
    chain_ids = _submit_chain(client)
    flaky_id = client.submit_task("flaky", retry_backoff=0.2)
    all_ids = batch_ids + chain_ids + [flaky_id]
    print(
        f"submitted {len(all_ids)} tasks: a batch of {len(batch_ids)} math tasks, "
        "a chain fetch -> transform -> report, and a flaky task"
    )
    finished = _wait_with_progress(client, queue, all_ids, workers, deadline)
    tasks = {task["task_id"]: task for task in finished}
    _print_results([tasks[i] for i in batch_ids], tasks[chain_ids[-1]], tasks[flaky_id])
    return _report_failures(tasks.values())


def _submit_chain(client: TaskQueueClient) -> list[int]:
    """Three tasks, each depending on the one before."""
    ids = [client.submit_task("fetch", {"numbers": CHAIN_INPUT})]
    for step in ("transform", "report"):
        ids.append(client.submit_task(step, dependencies=[ids[-1]]))
    return ids


def _wait_with_progress(
    client: TaskQueueClient,
    queue: TaskQueue,
    ids: list[int],
    workers: dict[str, subprocess.Popen[bytes]],
    deadline: float,
) -> list[TaskRecord]:
    """Wait for every task, printing the state counts about every PROGRESS_INTERVAL."""
    started = time.monotonic()
    tasks = None
    while True:
        _print_progress(queue, started)
        if tasks is not None:
            print(f"all {len(ids)} tasks finished in {time.monotonic() - started:.1f} s")
            return tasks
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise DemoError(f"tasks still unfinished after {DEADLINE_SECONDS:.0f} s")
        _check_alive(workers)
        with contextlib.suppress(WaitTimeoutError):
            tasks = client.wait_for_batch(ids, timeout=min(PROGRESS_INTERVAL, remaining))


def _print_progress(queue: TaskQueue, started: float) -> None:
    rows: list[Mapping[str, Any]] = list(queue.db.run(q.inspection.queue_summary()))
    counts = "  ".join(f"{state} {sum(row[state] for row in rows)}" for state in STATES)
    print(f"[{time.monotonic() - started:5.1f} s] {counts}", flush=True)


def _print_results(batch: list[TaskRecord], chain_end: TaskRecord, flaky_task: TaskRecord) -> None:
    print("\nBatch results")
    for (operation, values), task in zip(BATCH, batch):
        value = task["result"]["result"] if task["result"] else task["state"]
        where = f"  (worker pid {task['result']['pid']})" if task["result"] else ""
        print(f"  task {task['task_id']}: {operation} {values} = {value}{where}")
    print(f"\nChain: fetch {CHAIN_INPUT} -> transform (square) -> report")
    print(
        f"  final result (task {chain_end['task_id']}): "
        f"{json.dumps(chain_end['result'], sort_keys=True)}"
    )
    print(
        f"\nFlaky task {flaky_task['task_id']}: {flaky_task['state']} on attempt "
        f"{flaky_task['attempts']} of {flaky_task['max_attempts']}"
    )
    error = flaky_task["error"]
    if error:
        print(f"  error of attempt {error['attempt']}: {error['type']}: {error['message']}")


def _report_failures(tasks: Iterable[TaskRecord]) -> bool:
    """Print each task that did not succeed; True when there is none."""
    bad = [t for t in tasks if t["state"] != "succeeded"]
    for task in bad:
        reason = (task["error"] or {}).get("message") or task["cancel_reason"]
        complain(f"task {task['task_id']} ({task['task_type']}) {task['state']}: {reason}")
    return not bad


def _stop_workers(workers: dict[str, subprocess.Popen[bytes]]) -> bool:
    """SIGTERM every worker, wait, kill stragglers; True if all exited with code 0."""
    if not workers:
        return True
    print(f"\nstopping {len(workers)} workers (SIGTERM)...", flush=True)
    for process in workers.values():
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    codes = {name: _wait_or_kill(process, deadline) for name, process in workers.items()}
    print("exit codes: " + ", ".join(f"{name} {code}" for name, code in codes.items()))
    return all(code == 0 for code in codes.values())


def _wait_or_kill(process: subprocess.Popen[bytes], deadline: float) -> int:
    try:
        return process.wait(timeout=max(0.1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()
