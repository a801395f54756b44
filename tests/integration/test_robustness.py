"""What must never stop a worker: hostile error text, hand-made SQL, slow shutdowns,
open app transactions."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import threading
import time

import psycopg
import pytest

from omnispindle import WorkerClient
from omnispindle._db.sqlstate import translate
from omnispindle._worker._stop_bound import LAST_WORDS
from omnispindle.errors import IllegalTransitionError

from ..acceptance.workers import poll
from .test_leases import until_told_to_stop


@pytest.mark.parametrize("message", ["nul \x00 inside", "lone \ud800 surrogate"])
def test_error_text_postgres_cannot_store_is_cleaned(client, start_worker, message):
    def hostile(task):
        raise ValueError(message)

    start_worker({"hostile": hostile, "fine": lambda task: {"ok": True}})
    failed = client.wait_for_task(client.submit_task("hostile", max_retries=0), timeout=30)
    assert failed["state"] == "failed"
    assert failed["error"]["type"] == "ValueError"
    assert failed["error"]["message"].startswith(message.split()[0])
    assert client.wait_for_task(client.submit_task("fine"), timeout=30)["result"] == {"ok": True}


def test_retrying_by_hand_needs_an_attempt_left(client, conn, start_worker):
    start_worker({"boom": lambda task: 1 / 0, "fine": lambda task: {"ok": True}})
    task_id = client.submit_task("boom", max_retries=0)
    assert client.wait_for_task(task_id, timeout=30)["state"] == "failed"
    with pytest.raises(psycopg.Error) as raised:
        conn.execute(
            "UPDATE omnispindle.tasks SET state = 'pending', finished_at = NULL WHERE id = %s",
            [task_id],
        )
    assert isinstance(translate(raised.value), IllegalTransitionError)
    assert client.wait_for_task(client.submit_task("fine"), timeout=30)["result"] == {"ok": True}


def test_a_stopping_worker_keeps_its_leases_while_executors_finish(client, start_worker):
    release = threading.Event()

    def slow(task):
        release.wait(30)
        return {"finished": True}

    worker = start_worker(
        {"slow": slow}, lease_timeout=1.0, heartbeat_interval=0.2, shutdown_timeout=30
    )
    start_worker({"other": lambda task: {}}, sweep_interval=0.05)  # a sweeper on the watch
    task_id = client.submit_task("slow")
    poll(lambda: client.get_task(task_id)["state"] == "running", timeout=30)
    stopper = threading.Thread(target=worker.stop, kwargs={"timeout": 30})
    stopper.start()
    # Three lease lengths of shutdown pass; the lease holds all along.
    started = time.monotonic()
    while time.monotonic() - started < 3.0:
        assert client.get_task(task_id)["state"] == "running"
        time.sleep(0.1)
    release.set()
    stopper.join(timeout=30)
    task = client.get_task(task_id)
    assert (task["state"], task["result"], task["attempts"]) == ("succeeded", {"finished": True}, 1)


def test_an_executor_a_stopping_worker_hands_back_is_told_to_stop(client, start_worker):
    stopped = threading.Event()
    worker = start_worker({"crawl": until_told_to_stop(stopped)}, shutdown_timeout=0.3)
    task_id = client.submit_task("crawl")
    poll(lambda: client.get_task(task_id)["state"] == "running", timeout=30)
    worker.stop(timeout=30)
    task = client.get_task(task_id)
    assert (task["state"], task["attempts"]) == ("pending", 0)
    assert stopped.wait(10), "the executor handed back ran on, never told to stop"


def _executor_that_stops(worker_of, stop_returned, kind):
    """An executor (a function or a coroutine function) that stops its own worker."""

    def last(task):
        worker_of[0].stop()
        stop_returned.set()
        return {"last": True}

    async def last_async(task):
        return last(task)

    return last if kind == "thread" else last_async


@pytest.mark.parametrize("kind", ["thread", "coroutine"])
def test_an_executor_that_stops_its_own_worker_still_finishes_its_task(client, start_worker, kind):
    # stop() from the executor returns at once: the worker waits for that executor.
    stop_returned = threading.Event()
    worker_of = []
    executor = _executor_that_stops(worker_of, stop_returned, kind)
    worker_of.append(start_worker({"last": executor}, shutdown_timeout=15))
    task_id = client.submit_task("last")
    assert stop_returned.wait(10), "stop() inside the executor did not return"
    task = client.wait_for_task(task_id, timeout=10)
    assert (task["state"], task["result"], task["attempts"]) == ("succeeded", {"last": True}, 1)


# A worker in the main thread whose signal handler calls stop() while the loop
# holds its wake-up event's lock: a signal arriving inside Event.wait. The
# handler runs inside raise_signal, so with the lock held, every time.
STOP_FROM_A_HANDLER = """
import signal, sys, threading
from omnispindle import WorkerClient

class SignalledInsideWait(threading.Event):
    def wait(self, timeout=None):
        if not getattr(self, "signalled", False):
            self.signalled = True
            with self._cond:
                signal.raise_signal(signal.SIGUSR1)
        return super().wait(timeout)

worker = WorkerClient(dsn=sys.argv[1], concurrency=1, sweep_interval=None)
worker.register_task_executor("noop", lambda task: {})
worker._wake = SignalledInsideWait()
signal.signal(signal.SIGUSR1, lambda signum, frame: worker.stop())
worker.start()
print("stopped" if worker._wake.signalled else "never signalled")
"""


def test_stop_from_a_signal_handler_inside_a_wait_of_the_worker_stops_it(dsn):
    try:
        done = subprocess.run(
            [sys.executable, "-c", STOP_FROM_A_HANDLER, dsn],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("stop() from the signal handler never returned")
    assert (done.returncode, done.stdout.strip()) == (0, "stopped"), done.stderr


# A worker started in the main thread, whose Ctrl-C raises KeyboardInterrupt, or
# SystemExit (a handler that calls sys.exit() to run the finally blocks on the way
# out); the handler says when each is raised, and a heartbeat each second shows
# the stop waiting.
INTERRUPTED_TWICE = """
import signal, sys, threading
from omnispindle import WorkerClient

def interrupt(signum, frame):
    print("interrupted", flush=True)
    raise {"KeyboardInterrupt": KeyboardInterrupt, "SystemExit": SystemExit}[sys.argv[2]]

worker = WorkerClient(dsn=sys.argv[1], sweep_interval=None, shutdown_timeout=120, lease_timeout=3)
worker.register_task_executor("forever", lambda task: threading.Event().wait(120))
signal.signal(signal.SIGINT, interrupt)
worker.start()
"""


@pytest.mark.parametrize("raised", ["KeyboardInterrupt", "SystemExit"])
def test_a_second_ctrl_c_in_a_main_thread_worker_hands_the_running_task_back(
    client, conn, dsn, raised
):
    """The second KeyboardInterrupt (or SystemExit), raised while the stop waited for
    the task, ended the worker with the task left running until its lease lapsed,
    and the worker active."""
    worker = subprocess.Popen(
        [sys.executable, "-c", INTERRUPTED_TWICE, dsn, raised],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        task_id = client.submit_task("forever")
        poll(lambda: client.get_task(task_id)["state"] == "running", timeout=30)
        worker.send_signal(signal.SIGINT)
        assert worker.stdout.readline() == "interrupted\n"
        leased = lease_of(conn, task_id)
        poll(lambda: lease_of(conn, task_id) != leased, timeout=10)  # out of the handler
        worker.send_signal(signal.SIGINT)
        assert worker.stdout.readline() == "interrupted\n"
        worker.wait(timeout=20)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert client.get_task(task_id)["state"] == "pending"
    state = conn.execute("SELECT state::text FROM omnispindle.workers").fetchone()
    assert state == ("stopped",)


def lease_of(conn, task_id):
    row = conn.execute("SELECT lease_expires_at FROM omnispindle.tasks WHERE id = %s", [task_id])
    return row.fetchone()[0]


def test_an_open_app_transaction_never_stalls_a_worker(client, dsn, start_worker):
    release = threading.Event()
    start_worker(
        {"parent": lambda task: release.wait(30) and {"p": 1}, "child": lambda task: {"c": 1}},
        concurrency=2,
        sweep_interval=0.2,
    )
    parent = client.submit_task("parent")
    poll(lambda: client.get_task(parent)["state"] == "running", timeout=30)
    with psycopg.connect(dsn) as app:
        child = client.submit_task("child", dependencies=[parent], connection=app)
        release.set()
        # The parent finishes while the app's transaction is still open.
        assert client.wait_for_task(parent, timeout=10)["state"] == "succeeded"
        app.commit()
    # Its trigger could not see the uncommitted child: the sweeper repairs it.
    assert client.wait_for_task(child, timeout=15)["result"] == {"c": 1}


def test_a_lost_lease_frees_the_workers_slot(client, conn, start_worker):
    release = threading.Event()
    start_worker(
        {"hang": lambda task: release.wait(30) and {}, "fine": lambda task: {"ok": True}},
        concurrency=1,
        heartbeat_interval=0.2,
        sweep_interval=None,
    )
    hung = client.submit_task("hang")
    poll(lambda: client.get_task(hung)["state"] == "running", timeout=30)
    conn.execute(
        "UPDATE omnispindle.tasks SET lease_token = gen_random_uuid() WHERE id = %s", [hung]
    )
    assert client.wait_for_task(client.submit_task("fine"), timeout=10)["result"] == {"ok": True}
    release.set()


def test_the_repair_pass_finds_stranded_tasks_behind_many_blocked_ones(client, queue, conn):
    from omnispindle._maintenance.sweeper import Sweeper, SweeperConfig

    gate = client.submit_task("gate")
    client.submit_batch([{"task_type": "job", "dependencies": [gate]}] * 30)
    parent = client.submit_task("parent")
    doomed = client.submit_task("job", dependencies=[parent])
    cleanup = client.submit_task("job", dependencies=[parent], allow_failed_dependencies=True)
    # The parent ends unseen by its trigger, as when its children's submission
    # commits after it: both children still count it as unfinished.
    conn.execute("ALTER TABLE omnispindle.tasks DISABLE TRIGGER tasks_after_update")
    conn.execute(
        "UPDATE omnispindle.tasks SET state = 'cancelled', finished_at = now() WHERE id = %s",
        [parent],
    )
    conn.execute("ALTER TABLE omnispindle.tasks ENABLE TRIGGER tasks_after_update")
    conn.execute("UPDATE omnispindle.tasks SET created_at = now() - interval '1 minute'")
    counts = Sweeper(queue.db, SweeperConfig(batch_size=5)).run_once()
    assert counts.reconciled == 2
    assert client.get_task(doomed)["cancel_reason"] == f"dependency {parent} cancelled"
    assert client.get_task(cleanup)["state"] == "pending"
    assert client.get_task(gate)["state"] == "pending"


SHUTDOWN = 2.0
LATE = 1.5  # what a stop may take past its bound on a busy machine


def waiting_for_locks(conn: psycopg.Connection) -> int:
    """Sessions of this database waiting for a lock."""
    return conn.execute(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND wait_event_type = 'Lock'"
    ).fetchone()[0]


def test_a_worker_a_lock_holds_up_stops_within_its_shutdown_timeout(queue, dsn, conn):
    """A worker whose statement waited for an ACCESS EXCLUSIVE lock on the tasks
    stopped only once the lock went: the statement never saw the stop. Past the
    shutdown timeout it is cancelled, and what is left is left to the leases."""
    worker = WorkerClient(local_queue=queue, poll_interval=0.2, shutdown_timeout=SHUTDOWN)
    worker.register_task_executor("t", lambda task: None)
    running = threading.Thread(target=worker.start, daemon=True)
    running.start()
    poll(lambda: queue.list_workers(), timeout=30)
    with psycopg.connect(dsn) as locker:
        locker.execute("LOCK TABLE omnispindle.tasks IN ACCESS EXCLUSIVE MODE")
        poll(lambda: waiting_for_locks(conn), timeout=30)
        started = time.monotonic()
        worker.stop(timeout=SHUTDOWN + 10)
        took, stopped = time.monotonic() - started, not running.is_alive()
        locker.rollback()
    running.join(30)
    assert stopped, f"still running {took:.1f} s after stop()"
    assert took < SHUTDOWN + LAST_WORDS + LATE, took


def test_a_claim_a_hand_written_row_refuses_is_told_and_waited_out(
    client, conn, start_worker, record_statements, caplog
):
    """A pending task that counts a dependency, written with the rules off (a
    restore without triggers), makes every claim that takes it fail
    (check_violation tasks_blocked_has_dependencies). The worker claimed again
    at once, without a word and deaf to stop, until Python's recursion limit
    ended its thread; it now warns once, waits as after a database error, and
    still stores what it runs."""
    release = threading.Event()
    executors = {"held": lambda task: release.wait(30) and {"ok": True}, "job": lambda task: {}}
    start_worker(executors, concurrency=2)
    held = client.submit_task("held")
    poll(lambda: client.get_task(held)["state"] == "running", timeout=30)
    with conn.transaction():
        conn.execute("ALTER TABLE omnispindle.tasks DISABLE TRIGGER tasks_state_rules")
        conn.execute(
            "INSERT INTO omnispindle.tasks (task_type, pending_dependencies) VALUES ('job', 1)"
        )
        conn.execute("ALTER TABLE omnispindle.tasks ENABLE TRIGGER tasks_state_rules")
    statements = record_statements()
    caplog.set_level(logging.WARNING, logger="omnispindle")
    client.submit_task("job")  # its notice wakes the worker to claim
    poll(lambda: "tasks_blocked_has_dependencies" in caplog.text, timeout=30)
    started = time.monotonic()
    poll(lambda: time.monotonic() - started > 1.0, timeout=30)
    claims = statements.names.count("complete_and_claim")
    assert claims < 20, f"{claims} claims in a second"
    refusals = [r for r in caplog.records if "tasks_blocked_has_dependencies" in r.getMessage()]
    assert len(refusals) == 1, [r.getMessage() for r in refusals]
    release.set()
    assert client.wait_for_task(held, timeout=30)["result"] == {"ok": True}
