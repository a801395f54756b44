"""FailForGood: an executor fails its task at once, with no retry, whatever attempts are left."""

from __future__ import annotations

import asyncio
import builtins
import sys

import pytest

from omnispindle import FailForGood

from .test_sql_entry_points import running

FAIL_FOR_GOOD = "omnispindle.errors.FailForGood"


class BadInput(FailForGood):
    """A project's own kind of final failure."""


def test_a_thread_executor_fails_for_good_on_its_first_attempt(client, start_worker):
    calls: list[int] = []

    def check(task):
        calls.append(task["attempt"])
        raise FailForGood("the order does not exist")

    start_worker({"check": check})
    task = client.wait_for_task(
        client.submit_task("check", max_retries=3, retry_backoff=0), timeout=30
    )
    assert (task["state"], task["attempts"], task["max_attempts"]) == ("failed", 1, 4)
    assert calls == [1]
    error = task["error"]
    assert (error["type"], error["message"], error["attempt"]) == (
        FAIL_FOR_GOOD,
        "the order does not exist",
        1,
    )
    assert error["retry"] is False
    assert 'raise FailForGood("the order does not exist")' in error["traceback"]


def test_a_plain_exception_is_still_retried_and_records_no_retry_field(client, start_worker):
    calls: list[int] = []

    def flaky(task):
        calls.append(task["attempt"])
        raise ConnectionError(f"attempt {task['attempt']} fails")

    start_worker({"flaky": flaky})
    task = client.wait_for_task(
        client.submit_task("flaky", max_retries=2, retry_backoff=0), timeout=30
    )
    assert (task["state"], task["attempts"]) == ("failed", 3)
    assert calls == [1, 2, 3]
    assert "retry" not in task["error"]


def test_a_coroutine_executor_fails_for_good_and_a_subclass_is_recorded_by_its_name(
    client, start_worker
):
    calls: list[int] = []

    async def check(task):
        calls.append(task["attempt"])
        await asyncio.sleep(0)
        raise BadInput(f"no such sku {task['parameters']['sku']}")

    start_worker({"check": check})
    task = client.wait_for_task(
        client.submit_task("check", {"sku": "x1"}, max_retries=3, retry_backoff=0), timeout=30
    )
    assert (task["state"], task["attempts"]) == ("failed", 1)
    assert calls == [1]
    assert task["error"]["type"] == f"{__name__}.BadInput"
    assert (task["error"]["message"], task["error"]["retry"]) == ("no such sku x1", False)


def test_the_cause_is_in_the_traceback_and_is_the_message_when_none_is_given(client, start_worker):
    def parse(task):
        try:
            int(task["parameters"]["n"])
        except ValueError as exc:
            if task["parameters"]["say"]:
                raise FailForGood("n is not a number") from exc
            raise FailForGood from exc

    start_worker({"parse": parse})
    said, unsaid = client.wait_for_batch(
        [
            client.submit_task("parse", {"n": "x", "say": True}, max_retries=2),
            client.submit_task("parse", {"n": "y", "say": False}, max_retries=2),
        ],
        timeout=30,
    )
    assert [said["attempts"], unsaid["attempts"]] == [1, 1]
    assert said["error"]["message"] == "n is not a number"
    assert unsaid["error"]["message"] == "ValueError: invalid literal for int() with base 10: 'y'"
    for task in (said, unsaid):
        assert task["error"]["type"] == FAIL_FOR_GOOD
        assert "ValueError: invalid literal" in task["error"]["traceback"]
        assert "direct cause of the following exception" in task["error"]["traceback"]


def test_dependents_are_cancelled_or_run_when_they_allow_failed_dependencies(client, start_worker):
    root = client.submit_task("refuse", max_retries=3, retry_backoff=0)
    child = client.submit_task("echo", dependencies=[root])
    grandchild = client.submit_task("echo", dependencies=[child])
    tolerant = client.submit_task("echo", dependencies=[root], allow_failed_dependencies=True)

    def refuse(task):
        raise FailForGood("refused")

    start_worker({"refuse": refuse, "echo": lambda task: task["dependency_failures"]})
    tasks = client.wait_for_batch([root, child, grandchild, tolerant], timeout=30)
    assert [t["state"] for t in tasks] == ["failed", "cancelled", "cancelled", "succeeded"]
    assert tasks[0]["attempts"] == 1
    assert tasks[1]["cancel_reason"] == tasks[2]["cancel_reason"] == f"dependency {root} failed"
    seen = tasks[3]["result"][str(root)]["error"]
    assert (seen["type"], seen["message"], seen["retry"]) == (FAIL_FOR_GOOD, "refused", False)


def test_retry_task_runs_it_again_by_hand_and_metrics_count_one_failure(
    queue, client, start_worker
):
    fixed = False

    def sync(task):
        if not fixed:
            raise FailForGood("bad credentials")
        return {"synced": task["attempt"]}

    start_worker({"sync": sync})
    task_id = client.submit_task("sync", max_retries=2, retry_backoff=0)
    assert client.wait_for_task(task_id, timeout=30)["attempts"] == 1
    rows = {row["task_type"]: row for row in queue.get_metrics()["task_types"]}
    assert (rows["sync"]["failed"], rows["sync"]["failed_last_hour"]) == (1, 1)
    assert rows["sync"]["retried_last_hour"] == 0

    fixed = True
    assert (
        client.retry_task(task_id)["message"] == f"task {task_id} is pending again (attempt 2 of 3)"
    )
    task = client.wait_for_task(task_id, timeout=30)
    assert (task["state"], task["result"], task["attempts"]) == ("succeeded", {"synced": 2}, 2)


# Three attempts of three tasks end in one call, as a worker's batch of failures.
FAIL_ATTEMPTS = (
    "SELECT id, state::text, retry_in FROM omnispindle.fail_attempts("
    "%(ids)s::bigint[], %(tokens)s::uuid[], %(errors)s::jsonb[]) ORDER BY id"
)


def test_fail_attempts_ends_only_the_task_whose_error_says_retry_false(client, conn):
    ids = [client.submit_task("sql", max_retries=2) for _ in range(3)]
    tokens = [running(conn, task_id) for task_id in ids]
    errors = ['{"retry": false}', '{"retry": "false"}', "{}"]
    rows = conn.execute(FAIL_ATTEMPTS, {"ids": ids, "tokens": tokens, "errors": errors}).fetchall()
    assert [(row[0], row[1], row[2] is None) for row in rows] == [
        (ids[0], "failed", True),
        (ids[1], "pending", False),
        (ids[2], "pending", False),
    ]
    assert client.get_task(ids[0])["finished_at"] is not None


needs_groups = pytest.mark.skipif(sys.version_info < (3, 11), reason="ExceptionGroup is 3.11's")


@needs_groups
def test_a_group_with_a_fail_for_good_leaf_fails_for_good_and_one_without_is_retried(
    client, start_worker
):
    calls: dict[str, list[int]] = {"gathered": [], "raised": [], "mixed": [], "plain": []}

    async def gathered(task):
        calls["gathered"].append(task["attempt"])

        async def refuse():
            raise FailForGood("the order does not exist")

        async with asyncio.TaskGroup() as group:
            group.create_task(refuse())
            group.create_task(asyncio.sleep(60))

    def raised(task):
        calls["raised"].append(task["attempt"])
        raise builtins.ExceptionGroup("x", [FailForGood("no")])

    def mixed(task):
        calls["mixed"].append(task["attempt"])
        inner = builtins.ExceptionGroup("inner", [BadInput("bad sku"), KeyError("k")])
        raise builtins.ExceptionGroup("outer", [ConnectionError("reset"), inner])

    def plain(task):
        calls["plain"].append(task["attempt"])
        raise builtins.ExceptionGroup("y", [ConnectionError("reset"), KeyError("k")])

    start_worker({"gathered": gathered, "raised": raised, "mixed": mixed, "plain": plain})
    ids = [
        client.submit_task(name, max_retries=2, retry_backoff=0)
        for name in ("gathered", "raised", "mixed", "plain")
    ]
    tasks = client.wait_for_batch(ids, timeout=30)
    assert [(t["state"], t["attempts"]) for t in tasks] == [
        ("failed", 1),
        ("failed", 1),
        ("failed", 1),
        ("failed", 3),
    ]
    assert calls == {"gathered": [1], "raised": [1], "mixed": [1], "plain": [1, 2, 3]}
    assert [t["error"].get("retry") for t in tasks] == [False, False, False, None]
    assert tasks[0]["error"]["type"] == "ExceptionGroup"
    assert "FailForGood: the order does not exist" in tasks[0]["error"]["traceback"]
