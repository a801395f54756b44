"""Executors for worker-process tests: each run is written to a ledger table.

The ledger lives in the database named by ``$LEDGER_DSN``; it records every
execution, so a test can tell tasks that ran twice from tasks that never ran.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import psycopg

LEDGER_APPLICATION = "test_ledger"
_local = threading.local()


def _ledger() -> psycopg.Connection:
    if getattr(_local, "conn", None) is None or _local.conn.closed:
        # Named, so that a fault aimed at the queue's connections can spare the ledger's.
        _local.conn = psycopg.connect(
            os.environ["LEDGER_DSN"], autocommit=True, application_name=LEDGER_APPLICATION
        )
    return _local.conn


def record(task_data):
    _ledger().execute(
        "INSERT INTO test_ledger (task_id, pid) VALUES (%s, %s)",
        [task_data["task_id"], os.getpid()],
    )
    return {"pid": os.getpid()}


def nap(task_data):
    """A short task, so that a run of many spans the faults a test injects."""
    record(task_data)
    time.sleep(0.01)
    return {"pid": os.getpid()}


def hold(task_data):
    """Records that it started, then runs until the marker file exists."""
    record(task_data)
    return wait_for_file(task_data)


def interval(task_data):
    """Records when it ran, by this machine's clock, for a check of how many ran at once."""
    started = time.time()
    time.sleep(task_data["parameters"].get("seconds", 0.03))
    _ledger().execute(
        "INSERT INTO test_intervals (task_id, pid, started, finished) VALUES (%s, %s, %s, %s)",
        [task_data["task_id"], os.getpid(), started, time.time()],
    )
    return {"pid": os.getpid()}


def crash(task_data):
    """Takes the whole worker process down, as a segfault or OOM kill would."""
    os._exit(3)


def wait_for_file(task_data):
    """Runs until the file named in the parameters exists (a deadline bounds it)."""
    marker = Path(task_data["parameters"]["marker"])
    deadline = time.monotonic() + 60
    while not marker.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{marker} never appeared")
        time.sleep(0.02)
    return {"saw": marker.name}


def until_cancelled(task_data):
    """Runs until it is asked to stop, then records that it saw the request."""
    from omnispindle import current_task

    deadline = time.monotonic() + 60
    while not current_task().cancelled:
        if time.monotonic() > deadline:
            raise TimeoutError("never cancelled")
        time.sleep(0.01)
    return record(task_data)


EXECUTORS = {
    "until_cancelled": until_cancelled,
    "record": record,
    "wait_for_file": wait_for_file,
    "nap": nap,
    "hold": hold,
    "crash": crash,
    "interval": interval,
}
