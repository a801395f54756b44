"""A WorkerClient inside a user's own program: how the program's end, threads and
child processes leave its tasks and its row."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from .workers import ROOT, worker_env

# A worker in a daemon thread, holding a task whose executor never returns,
# when the main script ends.
DAEMON_WORKER_AT_EXIT = """
import sys, threading
from omnispindle import TaskQueueClient, WorkerClient

dsn = sys.argv[1]
started = threading.Event()

def hold(task_data):
    started.set()
    threading.Event().wait()

worker = WorkerClient(dsn=dsn, name="daemon", poll_interval=0.2)
worker.register_task_executor("hold", hold)
threading.Thread(target=worker.start, daemon=True).start()
client = TaskQueueClient(dsn=dsn)
client.submit_task("hold")
assert started.wait(30)
print("ending", flush=True)
"""


def run_script(script: str, dsn: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), dsn],
        env=worker_env(dsn),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_a_daemon_thread_worker_hands_its_tasks_back_when_the_program_ends(dsn, conn):
    done = run_script(DAEMON_WORKER_AT_EXIT, dsn)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "ending\n"
    assert "Traceback" not in done.stderr
    task = conn.execute("SELECT state, attempts FROM omnispindle.tasks").fetchone()
    assert task == ("pending", 0)
    state = conn.execute("SELECT state FROM omnispindle.workers WHERE name = 'daemon'")
    assert state.fetchone() == ("stopped",)
