"""Worker processes from the CLI: many at once, and a clean stop on SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from .workers import ROOT, poll, start_worker_process, worker_env


@pytest.fixture
def ledger(conn):
    conn.execute("CREATE TABLE test_ledger (task_id bigint NOT NULL, pid integer NOT NULL)")
    return conn


def stop_all(processes):
    for process in processes:
        process.send_signal(signal.SIGTERM)
    codes = [process.wait(timeout=60) for process in processes]
    return codes


@pytest.mark.slow
def test_four_processes_run_5000_tasks_exactly_once(client, dsn, ledger):
    workers = [
        start_worker_process(dsn, "--concurrency", "4", "--name", f"proc-{n}") for n in range(4)
    ]
    try:
        ids = client.submit_batch(
            [{"task_type": "record", "parameters": {"n": n}} for n in range(5000)]
        )
        tasks = client.wait_for_batch(ids, timeout=300)
    finally:
        codes = stop_all(workers)
    assert codes == [0, 0, 0, 0]
    assert {t["state"] for t in tasks} == {"succeeded"}
    runs = ledger.execute("SELECT task_id, count(*) FROM test_ledger GROUP BY task_id").fetchall()
    assert len(runs) == 5000, "some task never ran"
    assert {count for _, count in runs} == {1}, "some task ran twice"
    assert sorted(task_id for task_id, _ in runs) == sorted(ids)
    pids = {row[0] for row in ledger.execute("SELECT DISTINCT pid FROM test_ledger")}
    assert len(pids) >= 2, "the work was not shared between processes"
    states = ledger.execute(
        "SELECT state::text, count(*) FROM omnispindle.workers GROUP BY 1"
    ).fetchall()
    assert states == [("stopped", 4)]


def test_sigterm_lets_the_running_task_finish(client, dsn, conn, tmp_path):
    marker = tmp_path / "go"
    worker = start_worker_process(dsn, "--name", "graceful")
    try:
        task_id = client.submit_task("wait_for_file", {"marker": str(marker)})
        poll(lambda: client.get_task(task_id)["state"] == "running", timeout=30)
        worker.send_signal(signal.SIGTERM)
        marker.touch()
        assert worker.wait(timeout=60) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
    task = client.get_task(task_id)
    assert (task["state"], task["result"]) == ("succeeded", {"saw": "go"})
    row = conn.execute(
        "SELECT state::text, stopped_at IS NOT NULL FROM omnispindle.workers"
    ).fetchone()
    assert row == ("stopped", True)


def test_unknown_executors_module_is_one_clear_line(dsn):
    command = [
        sys.executable,
        "-m",
        "omnispindle",
        "worker",
        "--dsn",
        dsn,
        "--executors",
        "tests.acceptance.workers",
    ]
    done = subprocess.run(
        command, env=worker_env(dsn), cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        (
            "omnispindle: module 'tests.acceptance.workers' defines no executors: declare them "
            "with @omnispindle.task, or define register(worker) or an EXECUTORS dict"
        )
    ]


def test_status_json_lists_queues_and_workers(client, dsn):
    import json

    client.submit_task("record")
    command = [sys.executable, "-m", "omnispindle", "status", "--dsn", dsn, "--json"]
    done = subprocess.run(
        command, env=worker_env(dsn), cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    status = json.loads(done.stdout)
    assert status["queues"][0]["task_type"] == "record"
    assert status["queues"][0]["pending"] == 1
    assert status["workers"] == []
