"""Helpers to run ``omnispindle worker`` processes in tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def worker_env(ledger_dsn: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "OMNISPINDLE_DSN"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["LEDGER_DSN"] = ledger_dsn
    return env


def start_worker_process(dsn: str, *args: str, ledger_dsn: str | None = None) -> subprocess.Popen:
    """Run ``omnispindle worker`` on the ledger executors; the ledger defaults to ``dsn``."""
    executors = "tests.acceptance.ledger_executors"
    command = [sys.executable, "-m", "omnispindle", "--log-level", "WARNING", "worker"]
    command += ["--dsn", dsn, "--executors", executors, *args]
    return subprocess.Popen(
        command,
        env=worker_env(ledger_dsn or dsn),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def poll(condition, timeout: float, interval: float = 0.05):
    """Return condition()'s first truthy value, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)
