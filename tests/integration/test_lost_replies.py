"""A step whose reply is lost after its commit (issue 17, finding 7): its claims are
handed back without counting an attempt, and its stored results are not called dropped."""

from __future__ import annotations

import logging
import threading

from omnispindle import DatabaseUnavailableError
from omnispindle._db.query import Query

DEADLINE = 30


def lose_one_reply(queue, monkeypatch, when):
    """Run every operation for real; the first step for which ``when(rows)`` holds
    commits, then raises as if its reply had been lost."""
    real_run = queue.db.run
    lost = threading.Event()

    def run(operation, **kwargs):
        result = real_run(operation, **kwargs)
        if (
            not lost.is_set()
            and isinstance(operation, Query)
            and operation.statement.name == "complete_and_claim"
            and when(operation, result)
        ):
            lost.set()
            raise DatabaseUnavailableError("the database is unavailable: the reply was lost")
        return result

    monkeypatch.setattr(queue.db, "run", run)
    return lost


def claimed_something(operation, rows):
    return any(not row["dropped"] for row in rows)


def stored_something(operation, rows):
    return bool(operation.params and operation.params["ids"])


def test_a_claim_whose_reply_was_lost_is_handed_back_uncounted(
    queue, client, start_worker, monkeypatch
):
    """Such claims stayed running until their lease lapsed, then counted as failed
    attempts: with no retries left, the task failed without having run."""
    lost = lose_one_reply(queue, monkeypatch, claimed_something)
    start_worker({"t": lambda task: {"attempt": task["attempt"]}}, lease_timeout=120)
    task_id = client.submit_task("t", max_retries=0)
    record = client.wait_for_task(task_id, timeout=DEADLINE)
    assert lost.is_set()
    assert (record["state"], record["result"], record["attempts"]) == (
        "succeeded",
        {"attempt": 1},
        1,
    )


def test_a_result_whose_reply_was_lost_is_not_called_dropped(
    queue, client, start_worker, monkeypatch, caplog
):
    caplog.set_level(logging.WARNING, logger="omnispindle")
    lost = lose_one_reply(queue, monkeypatch, stored_something)
    start_worker({"t": lambda task: {"ok": True}})
    task_id = client.submit_task("t")
    assert client.wait_for_task(task_id, timeout=DEADLINE)["result"] == {"ok": True}
    second = client.submit_task("t")  # a step after the lost reply has run
    assert client.wait_for_task(second, timeout=DEADLINE)["state"] == "succeeded"
    assert lost.is_set()
    assert not [r for r in caplog.records if "dropped" in r.getMessage()], caplog.text
