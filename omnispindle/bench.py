"""``omnispindle bench``: scenarios that measure the queue and print figures."""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Callable

from .client import TaskQueueClient
from .errors import OmnispindleError
from .task_queue import TaskQueue


class BenchmarkError(OmnispindleError):
    """A benchmark could not reach the state it measures."""


def wait_for(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.02) -> None:
    """Poll ``condition`` until true; raise BenchmarkError naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise BenchmarkError(f"{what} did not happen within {timeout:g} s")
        time.sleep(interval)


def worker_process(dsn: str, name: str, concurrency: int, lease_timeout: float) -> subprocess.Popen:
    """A worker process with default settings but for its lease, running the bench executors."""
    return subprocess.Popen([
        sys.executable, "-m", "omnispindle", "--log-level", "ERROR", "worker", "--dsn", dsn,
        "--executors", "omnispindle.bench_executors", "--name", name,
        "--concurrency", str(concurrency), "--lease-timeout", str(lease_timeout)])


def recovery(queue: TaskQueue, tasks: int = 100, lease_timeout: float = 30.0) -> dict[str, Any]:
    """Seconds from SIGKILL of a worker holding ``tasks`` tasks until all run again elsewhere."""
    run_id = uuid.uuid4().hex[:8]
    doomed_name, rescuer_name = f"bench-doomed-{run_id}", f"bench-rescuer-{run_id}"
    ids: list[int] = []

    def running_on(name: str) -> int:
        return queue.db.fetch("count_running_on_worker", {"name": name, "ids": ids})[0]["running"]

    with tempfile.TemporaryDirectory() as scratch:
        marker = Path(scratch) / "release"
        doomed = worker_process(queue.dsn, doomed_name, tasks, lease_timeout)
        rescuer = None
        try:
            ids = TaskQueueClient(local_queue=queue).submit_batch(
                [{"task_type": "bench_hold", "parameters": {"marker": str(marker)}}] * tasks)
            wait_for(lambda: running_on(doomed_name) == tasks, 120, "claiming every task")
            rescuer = worker_process(queue.dsn, rescuer_name, tasks, lease_timeout)
            wait_for(lambda: any(w["name"] == rescuer_name for w in queue.list_workers()),
                     60, "the rescuing worker's start")
            doomed.send_signal(signal.SIGKILL)
            killed_at = time.monotonic()
            wait_for(lambda: running_on(rescuer_name) == tasks, lease_timeout * 3, "the rescue")
            seconds = time.monotonic() - killed_at
            marker.touch()
            TaskQueueClient(local_queue=queue).wait_for_batch(ids, timeout=120)
        finally:
            marker.touch()
            _stop(doomed, rescuer)
    return {"scenario": "recovery", "tasks": tasks, "lease_timeout_s": lease_timeout,
            "recovery_s": round(seconds, 2), "target_s": lease_timeout + 2,
            "met": seconds < lease_timeout + 2}


def _stop(*processes: subprocess.Popen | None) -> None:
    for process in filter(None, processes):
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in filter(None, processes):
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()


SCENARIOS: dict[str, Callable[..., dict[str, Any]]] = {"recovery": recovery}
