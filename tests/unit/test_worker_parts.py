"""The worker's parts decide without a database: claims, outcomes, storing, leases, timers.

Where a part runs statements, a stand-in runner answers them: these tests are
about the decisions; what the statements do is tested against Postgres in
tests/integration.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest

from omnispindle._db.query import Query
from omnispindle._worker._claims import NO_DEADLINE, Claim, Claims
from omnispindle._worker._execution import Attempt, Outcome, failure
from omnispindle._worker._leases import verdict
from omnispindle._worker._outcomes import LINGER_S, Inbox, enough
from omnispindle._worker._storage import UNSTORABLE_ERROR, OutcomeStore, reduced
from omnispindle._worker._timers import Timers
from omnispindle.context import TaskContext
from omnispindle.errors import FailForGood, ValidationError


def claim(task_id: int, token: str = "t", deadline: float = NO_DEADLINE) -> Claim:
    row: Any = {
        "id": task_id,
        "lease_token": f"{token}{task_id}",
        "task_type": "job",
        "attempts": 1,
        "max_attempts": 4,
        "timeout_seconds": None,
    }
    return Claim(row, TaskContext(task_id, "job", 1, 4), call=object(), deadline=deadline)  # type: ignore[arg-type]


def held(*claims: Claim) -> Claims:
    found = Claims()
    for one in claims:
        found.add(one)
    return found


def ok(task_id: int, token: str = "t") -> Outcome:
    return Outcome(task_id, f"{token}{task_id}", 1, result_json="{}")


def failed(task_id: int, message: str = "boom") -> Outcome:
    return Outcome(
        task_id,
        f"t{task_id}",
        1,
        error={"type": "RuntimeError", "message": message, "traceback": "...", "attempt": 1},
    )


# ---------------------------------------------------------------- claims


def test_an_outcome_of_an_abandoned_attempt_ends_no_newer_claim():
    claims = held(claim(1), claim(2, token="new"))
    late = ok(2, token="old")
    assert claims.holds(ok(1)) and not claims.holds(late)
    assert claims.free_slots(4, [ok(1), late]) == 3
    claims.release([ok(1), late])
    assert len(claims) == 1 and claims.get(2) is not None


def test_overdue_attempts_are_those_past_their_deadline():
    claims = held(claim(1, deadline=10.0), claim(2, deadline=20.0), claim(3))
    assert [c.row["id"] for c in claims.overdue(15.0)] == [1]
    assert claims.next_deadline() == 10.0


def test_a_task_is_told_to_stop_once_and_abandoned_a_heartbeat_later():
    claims = held(claim(1), claim(2))
    assert claims.ask_to_stop([1, 3], now=100.0) == [1]
    assert claims.ask_to_stop([1], now=101.0) == []
    assert claims.get(1).context.cancelled  # type: ignore[union-attr]
    assert claims.ignoring_cancel(since=99.0) == []
    assert [c.row["id"] for c in claims.ignoring_cancel(since=100.0)] == [1]


def test_a_heartbeat_answer_loses_what_it_left_out_and_stops_what_was_cancelled():
    claims = held(claim(1), claim(2), claim(3))
    claims.ask_to_stop([3], now=0.0)  # told a long time ago, still running
    answer: Any = [{"id": 1, "cancel_requested": False}, {"id": 3, "cancel_requested": True}]
    found = verdict(claims, answer, now=60.0, interval=10.0)
    assert [c.row["id"] for c in found.lost] == [2]
    assert found.asked_to_stop == []  # 3 had been told already
    assert [c.row["id"] for c in found.ignoring_cancel] == [3]
    assert claims.leases() == ([1, 3], ["t1", "t3"])


def test_a_lost_attempt_is_not_also_abandoned_as_ignoring_its_cancel():
    claims = held(claim(1))
    claims.ask_to_stop([1], now=0.0)
    found = verdict(claims, [], now=60.0, interval=10.0)
    assert [c.row["id"] for c in found.lost] == [1] and found.ignoring_cancel == []


# ---------------------------------------------------------------- the inbox


def test_the_first_outcome_wakes_the_loop_and_then_enough_of_them():
    wake = threading.Event()
    inbox = Inbox(wake)
    inbox.running(8)
    inbox.put(ok(1))
    assert wake.is_set()
    wake.clear()
    for task_id in (2, 3):
        inbox.put(ok(task_id))
        assert not wake.is_set()
    inbox.put(ok(4))  # half of eight running
    assert wake.is_set() and enough(8) == 4


def test_taking_splits_failures_from_results_and_a_put_back_keeps_order():
    inbox = Inbox(threading.Event())
    inbox.running(2)
    for outcome in (ok(1), failed(2), ok(3)):
        inbox.put(outcome)
    fails, results = inbox.take()
    assert ([o.task_id for o in fails], [o.task_id for o in results]) == ([2], [1, 3])
    inbox.put_back(results)
    inbox.put(ok(4))
    assert [o.task_id for o in inbox.take()[1]] == [1, 3, 4]


def test_lingering_waits_at_most_a_moment_for_more_outcomes():
    inbox = Inbox(threading.Event())
    inbox.running(10)
    inbox.put(ok(1))
    started = time.monotonic()
    inbox.linger(threading.Event())
    assert time.monotonic() - started < LINGER_S + 0.05


def test_lingering_ends_at_once_when_enough_have_come():
    wake = threading.Event()
    inbox = Inbox(wake)
    inbox.running(2)
    inbox.put(ok(1))  # one of two running: enough
    started = time.monotonic()
    inbox.linger(threading.Event())
    assert time.monotonic() - started < LINGER_S


# ---------------------------------------------------------------- storing


class Runner:
    """Answers statements by name; a refusing answer raises ValidationError."""

    def __init__(self, **answers: Callable[[dict[str, Any]], Any]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def run(self, operation: Any) -> Any:
        assert isinstance(operation, Query)
        params = dict(operation.params or {})
        self.calls.append((operation.statement.name, params))
        return operation.read(self.answers[operation.statement.name](params))


def ids_of(literal: str) -> list[int]:
    return [int(i) for i in literal.strip("{}").split(",") if i]


def store_all(params: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"id": i, "state": "succeeded"} for i in ids_of(params["ids"])]


def refuse_task(refused: int) -> Callable[[dict[str, Any]], list[dict[str, Any]]]:
    def answer(params: dict[str, Any]) -> list[dict[str, Any]]:
        if refused in ids_of(params["ids"]):
            raise ValidationError("jsonb refused it")
        return store_all(params)

    return answer


def test_a_refused_result_is_isolated_and_becomes_a_failure():
    runner = Runner(complete_tasks=refuse_task(2))
    refused = OutcomeStore(runner, "w").complete([ok(1), ok(2), ok(3)])
    assert [(o.task_id, o.error and o.error["type"]) for o in refused] == [
        (2, "ResultNotSerializable")
    ]
    stored = [ids_of(p["ids"]) for name, p in runner.calls]
    assert stored == [[1, 2, 3], [1], [2], [3]]


def test_a_refused_error_is_stored_alone_reduced_to_its_type():
    def fail(params: dict[str, Any]) -> list[dict[str, Any]]:
        errors = params["errors"]
        if "bad" in errors and UNSTORABLE_ERROR not in errors:
            raise ValidationError("jsonb refused it")
        return [{"id": i, "state": "pending", "retry_in": 1.5} for i in ids_of(params["ids"])]

    runner = Runner(fail_tasks=fail)
    delays = OutcomeStore(runner, "w").fail([failed(1), failed(2, "bad")])
    assert delays == [1.5, 1.5]
    last = runner.calls[-1][1]
    assert ids_of(last["ids"]) == [2]
    assert UNSTORABLE_ERROR in last["errors"] and '\\"traceback\\": null' in last["errors"]


def test_a_failure_for_good_says_retry_false_even_reduced_to_its_type():
    final = failure(Attempt(1, "t1", 1), FailForGood("bad input"))
    plain = failure(Attempt(2, "t2", 1), RuntimeError("boom"))
    assert final.error is not None and final.error["retry"] is False
    assert reduced(final).error == {
        "type": "omnispindle.errors.FailForGood",
        "message": UNSTORABLE_ERROR,
        "traceback": None,
        "attempt": 1,
        "retry": False,
    }
    assert "retry" not in (plain.error or {}) and "retry" not in (reduced(plain).error or {})


def test_an_error_refused_even_when_reduced_is_raised():
    def refuse(params: dict[str, Any]) -> list[dict[str, Any]]:
        raise ValidationError("jsonb refused it")

    with pytest.raises(ValidationError):
        OutcomeStore(Runner(fail_tasks=refuse), "w").fail([failed(1)])


def test_results_whose_lease_is_gone_are_logged_as_dropped(caplog):
    runner = Runner(complete_tasks=lambda params: [{"id": 1, "state": "succeeded"}])
    with caplog.at_level(logging.WARNING, logger="omnispindle.worker"):
        assert OutcomeStore(runner, "w-1").complete([ok(1), ok(2)]) == []
    assert [r.getMessage() for r in caplog.records] == [
        "task 2: lease no longer held by worker w-1; result dropped"
    ]


def test_failures_are_stored_as_json_documents():
    runner = Runner(fail_tasks=lambda params: [])
    OutcomeStore(runner, "w").fail([failed(7)])
    errors = runner.calls[0][1]["errors"]
    assert json.loads(json.loads(f"[{errors[1:-1]}]")[0])["message"] == "boom"


# ---------------------------------------------------------------- timers


def test_the_loop_sleeps_until_the_first_thing_due():
    timers = Timers(poll_interval=5.0)
    timers.heartbeat_at, timers.sweep_at, timers.schedule_at = 110.0, 104.0, 120.0
    assert timers.pause(now=100.0) == 4.0
    assert timers.pause(now=100.0, next_deadline=101.5) == 1.5
    timers.due_in([0.5, 3.0], now=100.0)
    assert timers.pause(now=100.0) == 0.5
    assert timers.pause(now=100.6) == pytest.approx(2.4)  # the first due time has passed


def test_a_quiet_loop_sleeps_a_poll_interval_and_never_less_than_nothing():
    timers = Timers(poll_interval=5.0)
    timers.heartbeat_at = 1000.0
    assert timers.pause(now=100.0) == 5.0
    timers.heartbeat_at = 50.0
    assert timers.pause(now=100.0) == 0.0


def test_an_announced_task_wakes_the_loop_when_due():
    timers = Timers(poll_interval=60.0)
    timers.heartbeat_at = float("inf")
    timers.announce(time.time() + 2.0)
    assert 1.5 < timers.pause(time.monotonic()) <= 2.0


def test_a_due_time_read_by_the_database_clock_is_never_early(monkeypatch):
    # The question left at 98.8 (monotonic), the database read its clock at 100.0,
    # its answer was back at 100.4: the midpoint, 99.6, would wake at 100.6, too early.
    host_clock = SimpleNamespace(monotonic=lambda: 100.0, time=lambda: 0.0)
    monkeypatch.setattr("omnispindle._worker._timers.time", host_clock)
    timers = Timers(poll_interval=60.0)
    timers.heartbeat_at = float("inf")
    timers.read_database_clock(epoch=5000.0, answered=100.4)
    timers.announce(5001.0)  # due at monotonic 101.0
    assert 1.0 <= timers.pause(now=100.0) <= 1.4
