"""The seed's API against a real Postgres: submit, run, wait, look up."""

from __future__ import annotations

import multiprocessing
import threading
import time

import pytest

from omnispindle import TaskNotFoundError, TaskQueueClient, WaitTimeoutError
from omnispindle.errors import TaskFailedError


def math_executor(task_data):
    parameters = task_data["parameters"]
    if parameters["operation"] == "sum":
        return {"result": sum(parameters["values"])}
    product = 1
    for value in parameters["values"]:
        product *= value
    return {"result": product}


@pytest.mark.smoke
def test_submit_run_and_wait(client, start_worker):
    start_worker({"math": math_executor}, capabilities=["math"])
    task_id = client.submit_task("math", {"operation": "sum", "values": [1, 2, 3, 4, 5]})
    task = client.wait_for_task(task_id, timeout=30)
    assert task["state"] == "succeeded"
    assert task["result"] == {"result": 15}
    assert task["attempts"] == 1
    assert task["task_id"] == task_id


@pytest.mark.smoke
def test_seed_batch_snippet(client, start_worker):
    start_worker({"math": math_executor})
    batch_ids = client.submit_batch(
        [
            {"task_type": "math", "parameters": {"operation": "sum", "values": [1, 2, 3]}},
            {"task_type": "math", "parameters": {"operation": "multiply", "values": [4, 5, 6]}},
        ]
    )
    results = client.wait_for_batch(batch_ids, timeout=30)
    assert [r["task_id"] for r in results] == batch_ids
    assert [r["result"]["result"] for r in results] == [6, 120]


def test_get_task_of_unknown_id_raises(client):
    with pytest.raises(TaskNotFoundError):
        client.get_task(987654)
    with pytest.raises(TaskNotFoundError):
        client.wait_for_task(987654, timeout=1)


def test_wait_timeout_raises_typed_error(client):
    task_id = client.submit_task("nobody-runs-this")
    with pytest.raises(WaitTimeoutError):
        client.wait_for_task(task_id, timeout=0.3)
    assert client.get_task(task_id)["state"] == "pending"


def test_wait_wakes_on_notification_not_poll(queue, start_worker):
    from omnispindle import TaskQueueClient

    slow_poll_client = TaskQueueClient(local_queue=queue, poll_interval=30)
    start_worker({"math": math_executor}, poll_interval=30)
    queue.notifier.connected.wait(10)
    task_id = slow_poll_client.submit_task("math", {"operation": "sum", "values": [2]})
    # Both sides poll only every 30 s: finishing within 10 s proves the
    # NOTIFY wake-ups worked.
    assert slow_poll_client.wait_for_task(task_id, timeout=10)["result"] == {"result": 2}


def _submit_and_wait(queue, answers):
    """In a forked child: submit with the parent's queue, then wait (the results and
    the seconds waited)."""
    try:
        slow_poll_client = TaskQueueClient(local_queue=queue, poll_interval=30)
        ids = [slow_poll_client.submit_task("echo", {"who": "child", "n": n}) for n in range(20)]
        started = time.monotonic()
        tasks = slow_poll_client.wait_for_batch(ids, timeout=10)
        answers.put(([task["result"] for task in tasks], time.monotonic() - started))
    except BaseException as exc:
        answers.put(repr(exc))


def test_a_forked_child_uses_its_parents_queue_as_its_own(queue, client, start_worker):
    start_worker({"echo": lambda task: task["parameters"]})
    parent_id = client.submit_task("echo", {"who": "parent"})
    assert client.wait_for_task(parent_id, timeout=30)["result"] == {"who": "parent"}
    forking = multiprocessing.get_context("fork")
    answers = forking.Queue()
    child = forking.Process(target=_submit_and_wait, args=(queue, answers))
    child.start()
    # The parent goes on reading while the child works: no reply may cross over.
    deadline = time.monotonic() + 30
    while child.is_alive() and time.monotonic() < deadline:
        assert client.get_task(parent_id)["result"] == {"who": "parent"}
    results, waited = answers.get(timeout=30)
    assert results == [{"who": "child", "n": n} for n in range(20)]
    # Polling only every 30 s, the child's wait ended early: a notification woke it.
    assert waited < 5
    child.join(timeout=30)
    assert child.exitcode == 0


def test_priority_then_fifo(client, start_worker):
    order = []
    low = client.submit_task("record", {"n": "low"}, priority=-5)
    first_high = client.submit_task("record", {"n": "high-1"}, priority=10)
    second_high = client.submit_task("record", {"n": "high-2"}, priority=10)
    middle = client.submit_task("record", {"n": "middle"})
    start_worker({"record": lambda t: order.append(t["parameters"]["n"]) or {}})
    client.wait_for_batch([low, first_high, second_high, middle], timeout=30)
    assert order == ["high-1", "high-2", "middle", "low"]


def test_capabilities_route_tasks(client, start_worker):
    def who(name):
        return lambda task: {"worker": name}

    start_worker(
        {"gpu-job": who("gpu"), "cpu-job": who("gpu")}, capabilities=["gpu-job", "cpu-job", "gpu"]
    )
    start_worker({"cpu-job": who("cpu")}, capabilities=["cpu-job"])
    gpu_ids = [client.submit_task("gpu-job") for _ in range(5)]
    tagged = client.submit_task("cpu-job", required_capabilities=["gpu"])
    for task in client.wait_for_batch(gpu_ids + [tagged], timeout=30):
        assert task["result"] == {"worker": "gpu"}


def test_concurrency_runs_executors_at_once(client, start_worker):
    barrier = threading.Barrier(3, timeout=20)

    def meet(task):
        barrier.wait()
        return {"met": True}

    start_worker({"meet": meet}, concurrency=3)
    ids = [client.submit_task("meet") for _ in range(3)]
    assert all(t["result"] == {"met": True} for t in client.wait_for_batch(ids, timeout=30))


def test_failure_is_retried_then_recorded(client, start_worker):
    attempts = []

    def always_fails(task):
        attempts.append(task["attempt"])
        raise RuntimeError(f"boom on attempt {task['attempt']}")

    start_worker({"fragile": always_fails})
    task_id = client.submit_task("fragile", max_retries=2, retry_backoff=0.05)
    task = client.wait_for_task(task_id, timeout=30)
    assert task["state"] == "failed"
    assert attempts == [1, 2, 3]
    assert task["attempts"] == 3
    assert task["error"]["type"] == "RuntimeError"
    assert task["error"]["message"] == "boom on attempt 3"
    assert "always_fails" in task["error"]["traceback"]
    with pytest.raises(TaskFailedError, match="boom on attempt 3"):
        client.wait_for_task(task_id, timeout=5, raise_on_error=True)


def test_retry_then_success(client, start_worker, conn):
    def flaky(task):
        if task["attempt"] == 1:
            raise ConnectionError("transient")
        return {"ok": task["attempt"]}

    start_worker({"flaky": flaky})
    task_id = client.submit_task("flaky", retry_backoff=0.05)
    task = client.wait_for_task(task_id, timeout=30)
    assert (task["state"], task["result"], task["attempts"]) == ("succeeded", {"ok": 2}, 2)
    errors = conn.execute(
        "SELECT errors FROM omnispindle.tasks WHERE id = %s", [task_id]
    ).fetchone()[0]
    assert [e["type"] for e in errors] == ["ConnectionError"]


def test_backoff_delays_the_retry(client, start_worker, conn):
    start_worker({"fails": lambda task: 1 / 0})
    task_id = client.submit_task("fails", max_retries=1, retry_backoff=1.0)
    client.wait_for_task(task_id, timeout=30)
    gap = conn.execute(
        "SELECT extract(epoch FROM started_at - "
        "(SELECT created_at FROM omnispindle.tasks WHERE id = %s))"
        " FROM omnispindle.tasks WHERE id = %s",
        [task_id, task_id],
    ).fetchone()[0]
    # The second attempt may start only after at least half the base backoff (equal jitter).
    assert gap >= 0.5


def test_unserializable_result_fails_the_attempt_and_worker_survives(client, start_worker):
    start_worker({"bad": lambda task: {"value": object()}, "good": lambda task: {"ok": True}})
    bad = client.submit_task("bad", max_retries=0)
    good = client.submit_task("good")
    bad_task, good_task = client.wait_for_batch([bad, good], timeout=30)
    assert bad_task["state"] == "failed"
    assert bad_task["error"]["type"] == "ResultNotSerializable"
    assert "not JSON-serializable" in bad_task["error"]["message"]
    assert good_task["result"] == {"ok": True}


def test_a_result_too_deep_to_serialize_fails_the_attempt(client, start_worker):
    def deep(task):
        nested: list = []
        for _ in range(100_000):
            nested = [nested]
        return {"deep": nested}

    start_worker({"deep": deep})
    task = client.wait_for_task(client.submit_task("deep", max_retries=0), timeout=30)
    assert (task["state"], task["error"]["type"]) == ("failed", "ResultNotSerializable")


def test_executor_receives_task_data_and_context(client, start_worker):
    from omnispindle import current_task

    def inspect(task):
        ctx = current_task()
        return {"keys": sorted(task), "ctx_id": ctx.task_id, "attempt": ctx.attempt}

    start_worker({"inspect": inspect})
    task_id = client.submit_task("inspect", {"x": 1})
    result = client.wait_for_task(task_id, timeout=30)["result"]
    assert result == {
        "keys": [
            "attempt",
            "dependency_failures",
            "dependency_results",
            "max_attempts",
            "parameters",
            "task_id",
            "task_type",
        ],
        "ctx_id": task_id,
        "attempt": 1,
    }
    assert current_task() is None


def test_sql_looking_strings_are_stored_as_data(client, conn):
    hostile = "x'); DROP TABLE omnispindle.tasks; --"
    task_id = client.submit_task(hostile, {hostile: hostile}, required_capabilities=[hostile])
    task = client.get_task(task_id)
    assert task["task_type"] == hostile
    assert task["parameters"] == {hostile: hostile}
    assert conn.execute("SELECT count(*) FROM omnispindle.tasks").fetchone()[0] == 1
