"""Coroutine executors: run on the worker's event loop, beside its executor threads."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from opentelemetry import trace
from opentelemetry.trace import StatusCode

from omnispindle import current_task
from tests.acceptance.workers import poll

from .test_tracing import by_name, spans  # noqa: F401 - the fixture, shared with that module


def loop_threads(worker_name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"omnispindle-{worker_name}-asyncio"]


async def until(condition, timeout: float = 10) -> bool:
    """Inside an executor: await ``condition()`` for at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


def test_a_coroutine_returns_its_result_with_its_task_context(client, start_worker):
    async def describe(task):
        ctx = current_task()
        inner = await asyncio.create_task(peek())  # tasks it creates inherit the context
        return {
            "double": 2 * task["parameters"]["n"],
            "task_id": ctx.task_id,
            "attempt": ctx.attempt,
            "inner": inner,
            "thread": threading.current_thread().name,
            "loop": asyncio.get_running_loop().is_running(),
        }

    async def peek():
        return current_task().task_id

    worker = start_worker({"describe": describe}, name="coro")
    task_id = client.submit_task("describe", {"n": 21})
    task = client.wait_for_task(task_id, timeout=30)
    assert task["result"] == {
        "double": 42,
        "task_id": task_id,
        "attempt": 1,
        "inner": task_id,
        "thread": "omnispindle-coro-asyncio",
        "loop": True,
    }
    assert len(loop_threads("coro")) == 1
    worker.stop(timeout=30)
    poll(lambda: not loop_threads("coro"), timeout=10)


def test_a_worker_without_coroutines_starts_no_event_loop(client, start_worker):
    start_worker({"plain": lambda task: {}}, name="plain")
    client.wait_for_task(client.submit_task("plain"), timeout=30)
    assert loop_threads("plain") == []


def test_a_failing_coroutine_is_retried_then_fails_for_good(client, start_worker):
    attempts = []

    async def flaky(task):
        attempts.append(task["attempt"])
        await asyncio.sleep(0)
        if task["parameters"]["always"] or task["attempt"] == 1:
            raise RuntimeError(f"attempt {task['attempt']} fails")
        return {"on": task["attempt"]}

    start_worker({"flaky": flaky})
    recovers = client.submit_task("flaky", {"always": False}, max_retries=2, retry_backoff=0)
    gives_up = client.submit_task("flaky", {"always": True}, max_retries=1, retry_backoff=0)
    recovered, failed = client.wait_for_batch([recovers, gives_up], timeout=30)
    assert (recovered["state"], recovered["result"], recovered["attempts"]) == (
        "succeeded",
        {"on": 2},
        2,
    )
    assert (failed["state"], failed["attempts"]) == ("failed", 2)
    assert failed["error"]["type"] == "RuntimeError"
    assert failed["error"]["message"] == "attempt 2 fails"
    assert "in flaky" in failed["error"]["traceback"]
    assert sorted(attempts) == [1, 1, 2, 2]


def test_a_timeout_cancels_the_coroutine_and_the_task_is_retried_or_failed(client, start_worker):
    cancelled = []

    async def slow_first(task):
        if task["attempt"] == 1 or task["parameters"]["always"]:
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                cancelled.append((task["task_id"], task["attempt"]))
                raise
        return {"on": task["attempt"]}

    start_worker({"slow": slow_first})
    retried = client.submit_task(
        "slow", {"always": False}, timeout=0.5, max_retries=1, retry_backoff=0
    )
    failed = client.submit_task("slow", {"always": True}, timeout=0.5, max_retries=0)
    first, second = client.wait_for_batch([retried, failed], timeout=30)
    assert (first["state"], first["result"], first["attempts"]) == ("succeeded", {"on": 2}, 2)
    assert first["error"]["type"] == "TaskTimeout"  # the last error: attempt 1's
    assert (second["state"], second["error"]["type"]) == ("failed", "TaskTimeout")
    poll(lambda: len(cancelled) == 2, timeout=10)
    assert sorted(cancelled) == [(retried, 1), (failed, 1)]


def test_a_cancel_request_is_seen_through_current_task(client, start_worker):
    started, stopped = threading.Event(), threading.Event()

    async def cooperative(task):
        ctx = current_task()
        started.set()
        if await until(lambda: ctx.cancelled, timeout=30):
            stopped.set()
        return {"stopped": ctx.cancelled}

    start_worker({"loop": cooperative, "job": lambda task: {}})
    task_id = client.submit_task("loop")
    child = client.submit_task("job", dependencies=[task_id])
    assert started.wait(30)
    client.cancel_task(task_id)
    assert stopped.wait(5)
    task, dependent = client.wait_for_batch([task_id, child], timeout=30)
    assert (task["state"], task["result"], task["attempts"]) == ("cancelled", None, 1)
    assert dependent["state"] == "cancelled"


def test_an_ignored_cancel_cancels_the_coroutine(client, start_worker):
    seen = threading.Event()

    async def stubborn(task):
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            seen.set()
            raise
        return {"finished": True}

    start_worker({"stubborn": stubborn}, heartbeat_interval=0.3)
    task_id = client.submit_task("stubborn")
    poll(lambda: client.get_task(task_id)["state"] == "running", timeout=30)
    client.cancel_task(task_id)
    task = client.wait_for_task(task_id, timeout=10)
    assert (task["state"], task["result"], task["error"]["type"]) == (
        "cancelled",
        None,
        "Cancelled",
    )
    assert seen.wait(5)


def test_sync_and_async_executors_share_the_concurrency(client, start_worker):
    changed = threading.Condition()
    state = {"running": [], "peak": 0, "at_peak": None}

    def enter(kind: str) -> None:
        with changed:
            state["running"].append(kind)
            if len(state["running"]) > state["peak"]:
                state["peak"] = len(state["running"])
                state["at_peak"] = sorted(state["running"])
            changed.notify_all()

    def leave(kind: str) -> None:
        with changed:
            state["running"].remove(kind)

    def full() -> bool:
        return state["peak"] >= 4

    def sync_job(task):
        enter("sync")
        try:
            with changed:
                met = changed.wait_for(full, timeout=20)
            return {"met": met}
        finally:
            leave("sync")

    async def async_job(task):
        enter("async")
        try:
            return {"met": await until(full, timeout=20)}
        finally:
            leave("async")

    start_worker({"sync": sync_job, "async": async_job}, concurrency=4)
    ids = client.submit_batch([{"task_type": kind} for kind in ["sync", "async"] * 6])
    tasks = client.wait_for_batch(ids, timeout=60)
    assert [t["result"] for t in tasks] == [{"met": True}] * 12
    assert state["peak"] == 4
    assert state["at_peak"] == ["async", "async", "sync", "sync"]


def test_a_coroutine_emits_partials_that_stream(client, start_worker):
    async def frames(task):
        ctx = current_task()
        for frame in range(5):
            ctx.emit({"frame": frame})
            await asyncio.sleep(0)
        return {"frames": 5}

    start_worker({"render": frames})
    task_id = client.submit_task("render")
    events = list(client.stream_task(task_id, timeout=30))
    assert [e["data"] for e in events[:-1]] == [{"frame": f} for f in range(5)]
    assert [e["seq"] for e in events[:-1]] == [1, 2, 3, 4, 5]
    assert events[-1]["kind"] == "final" and events[-1]["task"]["result"] == {"frames": 5}


def test_stop_waits_for_a_coroutine_then_hands_back_one_that_overruns(client, start_worker):
    started, seen = threading.Event(), threading.Event()

    async def nap(task):
        started.set()
        try:
            await asyncio.sleep(task["parameters"]["seconds"])
        except asyncio.CancelledError:
            seen.set()
            raise
        return {"slept": task["parameters"]["seconds"]}

    worker = start_worker({"nap": nap}, shutdown_timeout=1.0, name="draining")
    short = client.submit_task("nap", {"seconds": 0.2})
    assert started.wait(30)
    worker.stop(timeout=30)
    assert client.get_task(short)["result"] == {"slept": 0.2}

    started.clear()
    worker = start_worker({"nap": nap}, shutdown_timeout=0.5, name="overrunning")
    long = client.submit_task("nap", {"seconds": 60})
    assert started.wait(30)
    worker.stop(timeout=30)
    task = client.get_task(long)
    assert (task["state"], task["attempts"]) == ("pending", 0)
    assert seen.wait(5)
    assert not loop_threads("draining") and not loop_threads("overrunning")


def test_the_execution_span_wraps_the_coroutine(client, start_worker, spans):  # noqa: F811
    inside = {}

    async def traced(task):
        inside[task["attempt"]] = trace.get_current_span().get_span_context().span_id
        await asyncio.sleep(0)
        if task["attempt"] == 1:
            raise RuntimeError("first attempt fails")
        return {}

    tracer = trace.get_tracer("web-app")
    with tracer.start_as_current_span("POST /jobs"):
        task_id = client.submit_task("traced", max_retries=1, retry_backoff=0)
    start_worker({"traced": traced})
    assert client.wait_for_task(task_id, timeout=30)["state"] == "succeeded"
    poll(lambda: len(by_name(spans, "execute traced")) == 2, timeout=10)
    failed, succeeded = sorted(
        by_name(spans, "execute traced"), key=lambda s: s.attributes["omnispindle.task.attempt"]
    )
    [submit] = by_name(spans, "submit traced")
    assert failed.parent.span_id == succeeded.parent.span_id == submit.context.span_id
    assert failed.status.status_code is StatusCode.ERROR
    assert succeeded.status.status_code is StatusCode.UNSET
    assert inside == {1: failed.context.span_id, 2: succeeded.context.span_id}


def test_a_callable_object_with_an_async_call_is_a_coroutine_executor():
    from omnispindle._worker._event_loop import is_coroutine_executor

    class Handler:
        async def __call__(self, task):
            return {}

    assert is_coroutine_executor(Handler())
    assert not is_coroutine_executor(lambda task: {})


@pytest.mark.parametrize("escape", [SystemExit, KeyboardInterrupt])
def test_a_system_exit_in_a_task_a_coroutine_started_fails_that_coroutine_alone(
    client, start_worker, escape
):
    """asyncio raises SystemExit and KeyboardInterrupt of a task out of its event loop:
    one raised in a task an executor started (gather, wait_for, create_task) stopped
    the loop, so that every coroutine on it stayed running and the worker died."""
    release = threading.Event()

    async def waits(task):
        assert await until(release.is_set)
        return {"n": task["parameters"]["n"]}

    async def child():
        await asyncio.sleep(0)
        raise escape(2)

    async def exits(task):
        await asyncio.gather(child())

    start_worker({"waits": waits, "exits": exits}, concurrency=4)
    waiting = client.submit_task("waits", {"n": 1})
    poll(lambda: client.get_task(waiting)["state"] == "running", timeout=10)
    exiting = client.submit_task("exits", max_retries=0)
    failed = client.wait_for_task(exiting, timeout=10)
    assert (failed["state"], failed["error"]["type"]) == ("failed", escape.__name__)
    release.set()
    assert client.wait_for_task(waiting, timeout=10)["result"] == {"n": 1}
    after = client.wait_for_task(client.submit_task("waits", {"n": 2}), timeout=10)
    assert after["result"] == {"n": 2}
