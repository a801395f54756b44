"""Tasks declared with a decorator: executors and submission defaults in one place
(issue 20, "a decorator for defining tasks")."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from omnispindle import (
    AsyncTaskQueueClient,
    ConfigurationError,
    ValidationError,
    WorkerClient,
    entry,
    task,
)
from omnispindle._core.declared import REGISTRY
from omnispindle.registry import declared_tasks

DEADLINE = 60
OMNISPINDLE = str(Path(sys.executable).parent / "omnispindle")


@pytest.fixture(autouse=True)
def forget_declarations():
    """The registry is the process's: each test leaves it as it found it."""
    before = {d.task_type for d in declared_tasks()}
    yield
    for declared in declared_tasks():
        if declared.task_type not in before:
            REGISTRY.forget(declared.task_type)


def options(conn, task_id):
    return conn.execute(
        "SELECT priority, max_attempts, timeout_seconds, retry_backoff, required_capabilities "
        "FROM omnispindle.tasks WHERE id = %s",
        [task_id],
    ).fetchone()


def test_a_declared_task_gives_its_defaults_to_submissions(client, conn):
    @task(
        "resize",
        priority=7,
        max_retries=5,
        timeout=30,
        retry_backoff=2.5,
        required_capabilities=["gpu"],
    )
    def resize(task_data):
        return {}

    plain = client.submit_task("resize", {"width": 640})
    assert options(conn, plain) == (7, 6, 30.0, 2.5, ["gpu"])
    given = client.submit_task("resize", priority=0, max_retries=0, timeout=5)
    assert options(conn, given) == (0, 1, 5.0, 2.5, ["gpu"])
    [in_batch] = client.submit_batch([{"task_type": "resize"}])
    assert options(conn, in_batch) == (7, 6, 30.0, 2.5, ["gpu"])
    undeclared = client.submit_task("other")
    assert options(conn, undeclared) == (0, 4, None, 1.0, [])
    assert resize({"parameters": {}}) == {}  # the function itself is left as it was


def test_the_async_client_and_schedules_take_them_too(dsn, client, conn):
    task("report", priority=3, max_retries=1)(lambda task_data: {})

    async def submit():
        async with AsyncTaskQueueClient(dsn=dsn) as async_client:
            return await async_client.submit_task("report")

    assert options(conn, asyncio.run(submit()))[:2] == (3, 2)
    client.add_periodic_task("nightly", "@daily", "report")
    saved = conn.execute("SELECT priority, max_attempts FROM omnispindle.periodic_tasks").fetchone()
    assert saved == (3, 2)


def test_a_worker_runs_what_it_declares(queue, client):
    worker = WorkerClient(local_queue=queue, poll_interval=0.2)

    @worker.task("double", max_retries=0)
    def double(task_data):
        return {"twice": 2 * task_data["parameters"]["n"]}

    assert worker.task_types == ["double"]
    threading.Thread(target=worker.start, daemon=True).start()
    try:
        done = client.wait_for_task(client.submit_task("double", {"n": 21}), timeout=DEADLINE)
    finally:
        worker.stop(timeout=DEADLINE)
    assert (done["result"], done["max_attempts"]) == ({"twice": 42}, 1)


def test_register_declared_tasks_hands_a_worker_every_declaration(queue):
    task("a")(lambda task_data: {})
    task("b")(lambda task_data: {})
    worker = WorkerClient(local_queue=queue)
    worker.register_declared_tasks()
    assert {"a", "b"} <= set(worker.task_types)


@pytest.mark.parametrize(
    ("given", "says"),
    [
        ({"priority": 5000}, "priority"),
        ({"max_retries": -1}, "max_retries"),
        ({"timeout": 0}, "timeout"),
        ({"required_capabilities": "gpu"}, "required_capabilities"),
    ],
)
def test_a_bad_default_is_refused_where_it_is_declared(given, says):
    with pytest.raises(ValidationError, match=says):
        task("resize", **given)
    assert "resize" not in {d.task_type for d in declared_tasks()}


def test_two_functions_cannot_declare_one_task_type():
    @task("send")
    def send_email(task_data):
        return {}

    with pytest.raises(ConfigurationError, match="declared twice"):

        @task("send")
        def send_sms(task_data):
            return {}

    task("send")(send_email)  # the same function again (a module imported twice) is fine


MODULE = """
from omnispindle import task


@task("shout", max_retries=0)
def shout(task_data):
    return {"loud": task_data["parameters"]["text"].upper()}
"""


def test_the_worker_command_runs_the_tasks_a_module_declares(tmp_path, dsn, client):
    (tmp_path / "declared.py").write_text(MODULE)
    task_id = client.submit_task("shout", {"text": "hi"})
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "OMNISPINDLE_DSN")}
    worker = subprocess.Popen(
        [OMNISPINDLE, "worker", "--dsn", dsn, "--executors", "declared"],
        cwd=tmp_path,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert client.wait_for_task(task_id, timeout=DEADLINE)["result"] == {"loud": "HI"}
    finally:
        worker.terminate()
        _, err = worker.communicate(timeout=DEADLINE)
    assert worker.returncode == 0, err


def test_entries_depend_on_declared_tasks_as_on_any(client, conn):
    task("step", priority=2)(lambda task_data: {})
    _, second = client.submit_batch(
        [{"task_type": "step"}, {"task_type": "step", "dependencies": [entry(0)]}]
    )
    assert options(conn, second)[0] == 2
    assert client.get_task(second)["state"] == "blocked"
