"""Cancellation that propagates, and partial results streamed in order."""

from __future__ import annotations

import json
import threading
import time
import uuid

import psycopg
import pytest

from omnispindle import TaskCancelled, TaskNotFoundError, TaskQueueClient, current_task
from omnispindle._db import queries as q
from omnispindle._db.notifier import STREAM_CHANNEL

from ..acceptance.workers import poll
from .test_type_limits import claim_query, waiting_for_a_lock


def test_cancelling_a_pending_task_cancels_its_descendants(client):
    parent = client.submit_task("job")
    child = client.submit_task("job", dependencies=[parent])
    grandchild = client.submit_task("job", dependencies=[child])
    other = client.submit_task("job")
    outcome = client.cancel_task(parent, reason="no longer needed")
    assert outcome == {
        "task_id": parent,
        "state": "cancelled",
        "cancelled": True,
        "message": f"task {parent} cancelled",
    }
    tasks = [client.get_task(i) for i in (parent, child, grandchild, other)]
    assert [t["state"] for t in tasks] == ["cancelled", "cancelled", "cancelled", "pending"]
    assert tasks[0]["cancel_reason"] == "no longer needed"
    assert tasks[2]["cancel_reason"] == f"dependency {parent} cancelled"


def test_cancelling_a_blocked_task_leaves_its_parent(client):
    parent = client.submit_task("job")
    child = client.submit_task("job", dependencies=[parent])
    assert client.cancel_task(child)["state"] == "cancelled"
    assert client.get_task(parent)["state"] == "pending"


def test_cancelling_a_finished_task_says_so(client, start_worker):
    start_worker({"job": lambda task: {"ok": True}})
    task_id = client.submit_task("job")
    client.wait_for_task(task_id, timeout=30)
    outcome = client.cancel_task(task_id)
    assert outcome["cancelled"] is False
    assert outcome["message"] == f"task {task_id} already succeeded; nothing to cancel"
    assert client.get_task(task_id)["result"] == {"ok": True}
    with pytest.raises(TaskNotFoundError):
        client.cancel_task(424242)


def claimed(queue, task_type: str, worker_id: uuid.UUID):
    """The row of the one task a claim by ``worker_id`` takes."""
    [row] = queue.db.run(claim_query([task_type], 1, worker_id))
    return row


def state_and_last_error(conn, task_id: int):
    return conn.execute(
        "SELECT state::text, errors -> -1 ->> 'message' FROM omnispindle.tasks WHERE id = %s",
        [task_id],
    ).fetchone()


def test_a_failure_stored_while_a_cancel_commits_ends_cancelled_with_its_error(
    client, queue, dsn, conn
):
    """A worker's failure that waited for the task's row while a cancel of it
    committed read whether a cancel was asked from before: it sent the task back
    to pending with its cancel request, which the state rules refused, and the
    worker stored a note that the error could not be stored instead of it."""
    task_id = client.submit_task("job")
    row = claimed(queue, "job", uuid.uuid4())
    outcome: dict[str, object] = {}

    def fail() -> None:
        error = json.dumps({"type": "OSError", "message": "disk full", "attempt": 1})
        failing = q.tasks.fail_tasks(ids=[task_id], tokens=[row["lease_token"]], errors=[error])
        try:
            outcome["states"] = [r["state"] for r in queue.db.run(failing)]
        except Exception as exc:  # the test reports it
            outcome["error"] = exc

    with psycopg.connect(dsn) as holder:
        holder.execute("SELECT omnispindle.cancel_task(%s, 'stop it')", [task_id])
        thread = threading.Thread(target=fail)
        thread.start()
        poll(lambda: outcome or waiting_for_a_lock(conn, "fail_attempts"), 30)
        holder.commit()
        thread.join(30)
    assert outcome == {"states": ["cancelled"]}
    assert state_and_last_error(conn, task_id) == ("cancelled", "disk full")


def test_a_task_asked_to_cancel_is_handed_back_cancelled(client, queue, conn):
    """A worker handing back a running task whose cancel was asked for (stopping
    with it unfinished, or after a lost reply) sent it back to pending with its
    cancel request, which the state rules refused: the stopping worker raised
    and never deregistered."""
    worker_id = uuid.uuid4()
    stopping, unheld = client.submit_task("job"), client.submit_task("job")
    row = claimed(queue, "job", worker_id)
    claimed(queue, "job", worker_id)
    for task_id in (stopping, unheld):
        assert client.cancel_task(task_id)["state"] == "running"
    assert queue.db.run(q.tasks.release_tasks(ids=[stopping], tokens=[row["lease_token"]])) == [
        stopping
    ]
    assert queue.db.run(q.tasks.release_unheld(worker_id, [stopping])) == [unheld]
    for task_id in (stopping, unheld):
        assert state_and_last_error(conn, task_id) == ("cancelled", None)


def cooperative(started, observed):
    def run(task):
        started.set()
        ctx = current_task()
        while not ctx.wait_cancelled(0.01):
            pass
        observed.set()
        return {"stopped": True}

    return run


def test_a_running_task_sees_the_cancel_at_once_and_ends_cancelled(client, start_worker):
    started, observed = threading.Event(), threading.Event()
    start_worker(
        {"loop": cooperative(started, observed), "job": lambda task: {}}, heartbeat_interval=1.0
    )
    task_id = client.submit_task("loop")
    child = client.submit_task("job", dependencies=[task_id])
    assert started.wait(30)
    asked = time.monotonic()
    assert client.cancel_task(task_id)["message"] == (
        f"task {task_id} is running; its worker has been asked to stop it"
    )
    assert observed.wait(1.0), "not observed within one heartbeat interval"
    observed_in = time.monotonic() - asked
    task, dependent = client.wait_for_batch([task_id, child], timeout=30)
    assert (task["state"], task["result"]) == ("cancelled", None)
    assert dependent["state"] == "cancelled"
    assert observed_in < 1.0


def test_a_cancel_whose_notification_is_lost_is_seen_at_the_next_heartbeat(
    client, conn, start_worker
):
    started, observed = threading.Event(), threading.Event()
    start_worker({"loop": cooperative(started, observed)}, heartbeat_interval=0.5)
    task_id = client.submit_task("loop")
    assert started.wait(30)
    # A request written by hand sends no NOTIFY: only the heartbeat can find it.
    conn.execute(
        "UPDATE omnispindle.tasks SET cancel_requested_at = now() WHERE id = %s", [task_id]
    )
    assert observed.wait(0.5 + 0.5), "not observed within one heartbeat interval"
    assert client.wait_for_task(task_id, timeout=30)["state"] == "cancelled"


def test_an_executor_ignoring_the_cancel_is_abandoned_and_its_result_discarded(
    client, start_worker
):
    release = threading.Event()

    def stubborn(task):
        release.wait(60)
        return {"finished": True}

    start_worker({"stubborn": stubborn}, heartbeat_interval=0.3)
    task_id = client.submit_task("stubborn")
    poll(lambda: client.get_task(task_id)["state"] == "running", timeout=30)
    client.cancel_task(task_id)
    task = client.wait_for_task(task_id, timeout=10)
    release.set()
    assert (task["state"], task["result"], task["error"]["type"]) == (
        "cancelled",
        None,
        "Cancelled",
    )
    assert task["attempts"] == 1


def test_raising_task_cancelled_ends_the_task_cancelled_without_retry(client, start_worker):
    started = threading.Event()

    def polite(task):
        started.set()
        ctx = current_task()
        for _ in range(3000):
            ctx.raise_if_cancelled()
            time.sleep(0.01)
        return {"done": True}

    start_worker({"polite": polite})
    task_id = client.submit_task("polite", max_retries=3)
    assert started.wait(30)
    client.cancel_task(task_id)
    task = client.wait_for_task(task_id, timeout=30)
    assert (task["state"], task["attempts"]) == ("cancelled", 1)
    assert task["error"]["type"].endswith("TaskCancelled")
    with pytest.raises(TaskCancelled):
        raise TaskCancelled("importable from the package")


def chunks(gate):
    def run(task):
        ctx = current_task()
        for i in range(100):
            if i == 50:
                gate.wait(30)  # the early subscriber has read half before the rest is written
            ctx.emit({"i": i})
        return {"chunks": 100}

    return run


def test_streaming_100_chunks_to_an_early_and_a_late_subscriber(client, start_worker):
    gate = threading.Event()
    task_id = client.submit_task("chunks")
    early: list = []

    def subscribe():
        for event in client.stream_task(task_id, timeout=60):
            early.append(event)
            if event["kind"] == "partial" and event["data"]["i"] == 49:
                gate.set()

    reader = threading.Thread(target=subscribe)
    reader.start()
    start_worker({"chunks": chunks(gate)})
    reader.join(timeout=60)
    late = list(client.stream_task(task_id, timeout=60))
    for events in (early, late):
        assert [e["data"]["i"] for e in events[:-1]] == list(range(100))
        assert [e["seq"] for e in events[:-1]] == list(range(1, 101))
        assert events[-1]["kind"] == "final"
        assert events[-1]["task"]["result"] == {"chunks": 100}


def test_threads_of_one_executor_emit_at_once_and_every_partial_streams(client, start_worker):
    failures: list[BaseException] = []

    def fan_out(task):
        ctx = current_task()
        together = threading.Barrier(8)

        def emit_some(thread: int) -> None:
            together.wait(30)
            for n in range(20):
                try:
                    ctx.emit({"thread": thread, "n": n})
                except BaseException as exc:
                    failures.append(exc)

        threads = [threading.Thread(target=emit_some, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        return {"threads": 8}

    start_worker({"fan-out": fan_out})
    task_id = client.submit_task("fan-out", max_retries=0)
    events = list(client.stream_task(task_id, timeout=60))
    assert failures == []
    assert [e["seq"] for e in events[:-1]] == list(range(1, 161))
    for thread in range(8):
        mine = [e["data"]["n"] for e in events[:-1] if e["data"]["thread"] == thread]
        assert mine == list(range(20))  # each thread's partials in the order it emitted them


def test_a_stream_is_not_woken_by_the_partials_of_other_tasks(
    queue, client, start_worker, record_statements
):
    """Each reader of a task would read again at every partial of every task:
    a few hundred readers made every partial cost a few hundred queries."""
    quiet = TaskQueueClient(local_queue=queue, poll_interval=60)
    idle_id = client.submit_task("nobody-runs-this")
    read: list = []
    reader = threading.Thread(target=lambda: read.extend(quiet.stream_task(idle_id, timeout=60)))
    reader.start()
    poll(lambda: queue.notifier.listens_on(STREAM_CHANNEL), timeout=10)
    statements = record_statements()
    unblocked = threading.Event()
    unblocked.set()
    start_worker({"chunks": chunks(unblocked)})  # 100 partials, each its own NOTIFY
    client.wait_for_task(client.submit_task("chunks"), timeout=60)
    client.cancel_task(idle_id)
    reader.join(timeout=60)
    assert read[-1]["task"]["state"] == "cancelled"
    reads_of_idle = [
        p for name, p in statements.runs if name == "read_stream" and p["id"] == idle_id
    ]
    assert len(reads_of_idle) <= 5  # its own wake-ups: the cancel, not the other's 100 partials


def test_a_partial_stored_as_its_attempt_times_out_is_streamed_before_the_end(
    client, start_worker, conn, dsn
):
    go = threading.Event()
    emitted: list = []

    def late(task):
        ctx = current_task()
        ctx.emit("first")
        go.wait(30)
        emitted.append(ctx.emit("late"))  # numbered 2, which the test holds for now

    def stored() -> int:
        query = "SELECT count(*) FROM omnispindle.task_stream WHERE task_id = %s"
        return conn.execute(query, [task_id]).fetchone()[0]

    def waiting_on_locks() -> int:
        # In this test's database: another test run on the server waits on its own.
        query = (
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE wait_event_type = 'Lock' AND datname = current_database()"
        )
        return conn.execute(query).fetchone()[0]

    start_worker({"late": late})
    task_id = client.submit_task("late", max_retries=0, timeout=1)
    events: list = []
    with psycopg.connect(dsn) as holder:  # a transaction holding seq 2 until it rolls back
        poll(stored, timeout=30)
        holder.execute(
            "INSERT INTO omnispindle.task_stream (task_id, seq, attempt, payload) "
            "VALUES (%s, 2, 1, '\"held\"')",
            [task_id],
        )
        go.set()
        reader = threading.Thread(target=lambda: events.extend(client.stream_task(task_id, 60)))
        reader.start()
        # The late emit waits for seq 2 while the attempt runs past its timeout: the
        # stream either ends then, or the end waits for the emit.
        poll(lambda: not reader.is_alive() or waiting_on_locks() >= 2, timeout=30)
        holder.rollback()
    reader.join(timeout=30)
    assert poll(lambda: emitted, timeout=30) == [2]
    assert [e["data"] for e in events[:-1]] == ["first", "late"]
    assert events[-1]["task"]["state"] == "failed"


def test_emit_refuses_what_jsonb_cannot_store(client, start_worker):
    def bad(task):
        current_task().emit({"value": object()})

    start_worker({"bad": bad})
    task = client.wait_for_task(client.submit_task("bad", max_retries=0), timeout=30)
    assert task["error"]["type"] == "omnispindle.errors.ValidationError"
    assert "a partial result is not JSON-serializable" in task["error"]["message"]


def test_stream_of_an_unknown_task_raises(client):
    with pytest.raises(TaskNotFoundError):
        client.stream_task(999999)


def test_a_stream_that_does_not_finish_in_time_raises(client):
    from omnispindle import WaitTimeoutError

    task_id = client.submit_task("nobody-runs-this")
    with pytest.raises(WaitTimeoutError):
        list(client.stream_task(task_id, timeout=0.3))
