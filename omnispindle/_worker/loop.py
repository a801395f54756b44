"""The running worker: claim, execute, store outcomes, heartbeat, drain on stop."""

from __future__ import annotations

import functools
import heapq
import json
import logging
import os
import socket
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import psycopg

from omnispindle._worker.claim_cursor import ClaimCursor
from omnispindle.context import TaskContext
from omnispindle.errors import LeaseLostError, TaskCancelled, ValidationError, first_line
from omnispindle._worker.execution import Outcome, failure, run_async_executor, run_executor
from omnispindle._worker.event_loop import ExecutorLoop, is_coroutine_executor
from omnispindle._worker.threads import Call, ExecutorThreads
from omnispindle._db.notifier import CANCEL_CHANNEL, READY_CHANNEL
from omnispindle._maintenance.periodic import PeriodicScheduler
from omnispindle._db.pg_arrays import plain_array, text_array
from omnispindle._core.validation import json_text
from omnispindle._maintenance.sweeper import Sweeper, SweeperConfig, error_pause

log = logging.getLogger("omnispindle.worker")

UNSTORABLE_ERROR = "the error's text could not be stored"
# Longest wait for more outcomes before storing the ones at hand (see _linger).
LINGER_S = 0.002


@dataclass(frozen=True)
class WorkerSettings:
    """A worker's validated settings (see ``WorkerClient``)."""

    name: str
    concurrency: int
    poll_interval: float
    lease_timeout: float
    heartbeat_interval: float
    shutdown_timeout: float
    sweeper: SweeperConfig | None
    schedule_interval: float | None = None


class TaskTimeout(Exception):
    """The attempt ran past the task's timeout and was abandoned."""


@dataclass
class _Claim:
    row: dict[str, Any]
    context: TaskContext
    call: Call | Future
    deadline: float
    cancel_seen_at: float | None = None

    @property
    def token(self) -> Any:
        return self.row["lease_token"]


class WorkerLoop:
    """One run of a worker, from registration to a clean stop.

    The loop thread alone talks to the database; executor threads, and the
    event loop of coroutine executors, hand their outcomes back through a
    deque and wake the loop.
    """

    def __init__(self, queue: Any, settings: WorkerSettings,
                 executors: dict[str, Callable[[dict], Any]], task_types: list[str],
                 capabilities: list[str] | None, stopping: threading.Event,
                 wake: threading.Event) -> None:
        self.queue = queue
        self.db = queue.db
        self.settings = settings
        self.executors = executors
        self.task_types = task_types
        self.capabilities = capabilities if capabilities is not None else task_types
        self.task_types_array = text_array(self.task_types)
        self.capabilities_array = text_array(self.capabilities)
        self.stopping = stopping
        self.wake = wake
        self.claims: dict[int, _Claim] = {}
        self.outcomes: deque[Outcome] = deque()
        self.threads = ExecutorThreads(settings.concurrency, f"omnispindle-{settings.name}")
        # Started only for coroutine executors; claims bound threads and loop together.
        self.coroutine_types = {t for t in task_types if is_coroutine_executor(executors[t])}
        self.coroutines = ExecutorLoop(
            f"omnispindle-{settings.name}-asyncio") if self.coroutine_types else None
        self.sweeper = Sweeper(self.db, settings.sweeper) if settings.sweeper else None
        self.scheduler = PeriodicScheduler(self.db) if settings.schedule_interval else None
        self.next_schedule = 0.0
        self.next_heartbeat = 0.0
        self.next_sweep = 0.0
        self.due_times: list[float] = []  # when retried or delayed tasks become ready
        self.announced_due: deque[float] = deque()
        self.worker_id: Any = None
        self.cancel_check = threading.Event()
        self.cursor = ClaimCursor()

    def run(self) -> None:
        """Register, loop until stopping is set, then drain and deregister."""
        self.worker_id = self._register()
        log.info("worker %s started (id %s, types %s)", self.settings.name, self.worker_id, self.task_types)
        notifier = self.queue.notifier
        handles = [notifier.subscribe(READY_CHANNEL, self._on_ready_notice, with_payload=True),
                   notifier.subscribe(CANCEL_CHANNEL, self._on_cancel_notice)]
        try:
            self._loop()
        finally:
            for handle in handles:
                notifier.unsubscribe(handle)
            self._drain()
            log.info("worker %s stopped", self.settings.name)

    def _loop(self) -> None:
        errors = 0
        while not self.stopping.is_set():
            self._linger()
            self.wake.clear()
            try:
                more_ready = self._step()
                errors = 0
            except psycopg.Error as exc:
                # Lost connections, restarts, deadlocks, lock timeouts: all pass.
                errors += 1
                if errors == 1:
                    log.warning("worker %s: database error (%s); retrying", self.settings.name,
                                first_line(exc))
                self.stopping.wait(error_pause(errors))
                continue
            if not more_ready:
                self.wake.wait(self._pause())

    def _step(self) -> bool:
        """Do what is due, store failures, then store results and claim in one statement.

        Returns True when every free slot was filled, so more work may be ready.
        """
        self._abandon_overdue()
        self._check_cancels()
        self._heartbeat_if_due()
        self._sweep_if_due()
        self._schedule_if_due()
        # Taken last: from here on, a database error hands them back for the next try.
        return self._complete_and_claim(self._take_outcomes())

    def _register(self) -> Any:
        from omnispindle import __version__

        row = self.db.fetch("register_worker", {
            "name": self.settings.name, "host": socket.gethostname(), "pid": os.getpid(),
            "capabilities": self.capabilities, "task_types": self.task_types,
            "concurrency": self.settings.concurrency, "version": __version__,
        })[0]
        return row["id"]

    def _complete_and_claim(self, succeeded: list[Outcome]) -> bool:
        """Store ``succeeded`` and claim for the slots then free: one round trip, one commit."""
        free = self.settings.concurrency - len(self.claims) + sum(map(self._holds, succeeded))
        if not succeeded and free <= 0:
            return False
        after_priority, after_id = self.cursor.start()
        started = time.monotonic()
        try:
            rows = self.db.fetch("complete_and_claim", {
                "ids": plain_array([o.task_id for o in succeeded]),
                "tokens": plain_array([o.lease_token for o in succeeded]),
                "results": text_array([o.result_json for o in succeeded]),
                "task_types": self.task_types_array, "capabilities": self.capabilities_array,
                "limit": max(free, 0), "worker_id": self.worker_id,
                "lease_seconds": self.settings.lease_timeout,
                "after_priority": after_priority, "after_id": after_id,
            })
        except ValidationError:
            # A result the database refuses: store one by one to find it, then claim.
            self._store(succeeded, [])
            self._release_claims(succeeded)
            return self._complete_and_claim([])
        except psycopg.Error:
            self.outcomes.extendleft(reversed(succeeded))
            raise
        claimed = [row for row in rows if not row["dropped"]]
        if len(claimed) < len(rows):
            self._log_lost([row["id"] for row in rows if row["dropped"]], "result")
        self._release_claims(succeeded)
        self._start(claimed)
        if free > 0:
            self.cursor.move(claimed, free, time.monotonic() - started)
        return 0 < free == len(claimed)

    def _holds(self, outcome: Outcome) -> bool:
        """Whether ``outcome`` ends the attempt this worker holds (not an abandoned one)."""
        claim = self.claims.get(outcome.task_id)
        return claim is not None and claim.token == outcome.lease_token

    def _start(self, rows: list[dict[str, Any]]) -> None:
        """Hand claimed rows to their executors."""
        now = time.monotonic()
        for row in rows:
            context = TaskContext(row["id"], row["task_type"], row["attempts"], row["max_attempts"],
                                  _emit=functools.partial(self._emit_partial, row))
            runner, run = self._runner(row["task_type"])
            call = runner.submit(self._on_done, run, self.executors[row["task_type"]], row, context)
            timeout = row["timeout_seconds"]
            self.claims[row["id"]] = _Claim(row, context, call,
                                            now + timeout if timeout else float("inf"))

    def _emit_partial(self, row: dict[str, Any], data: Any) -> int:
        """Store one partial result of a running attempt (called from its executor thread)."""
        stored = self.db.fetch("emit_partial", {
            "id": row["id"], "token": row["lease_token"],
            "payload": json_text(data, "a partial result")})
        if not stored:
            raise LeaseLostError(f"task {row['id']}: this attempt no longer holds the lease")
        return stored[0]["seq"]

    def _runner(self, task_type: str) -> tuple[Any, Callable[..., Any]]:
        """Where a task type's executor runs: the event loop for coroutines, else the threads."""
        if task_type in self.coroutine_types:
            return self.coroutines, run_async_executor
        return self.threads, run_executor

    def _on_done(self, call: Call | Future) -> None:
        """Runs on the executor's thread (or event loop) as soon as its call ends."""
        if call.cancelled():  # an abandoned coroutine: its attempt's end is handled already
            return
        self.outcomes.append(call.result())
        # The first outcome wakes the loop, which lingers for more; enough of
        # them wake it at once (see _linger). Fewer wake-ups, bigger batches.
        if len(self.outcomes) in (1, self._enough_outcomes()):
            self.wake.set()

    def _enough_outcomes(self) -> int:
        """Outcomes worth one statement without lingering: half of what runs."""
        return max(1, len(self.claims) // 2)

    def _linger(self) -> None:
        """Let outcomes gather for up to ``LINGER_S`` while other tasks are about to end.

        Tasks claimed together often end together; storing them with one
        statement costs one commit instead of one each.
        """
        deadline = time.monotonic() + LINGER_S
        while 0 < len(self.outcomes) < self._enough_outcomes() and not self.stopping.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self.wake.clear()
            if len(self.outcomes) >= self._enough_outcomes():  # arrived while clearing
                return
            self.wake.wait(remaining)

    def _take_outcomes(self) -> list[Outcome]:
        """Store the failed outcomes waiting; return the succeeded ones, still to store."""
        batch: list[Outcome] = []
        while self.outcomes:
            batch.append(self.outcomes.popleft())
        failed = [o for o in batch if not o.succeeded]
        if failed:
            try:
                self._fail(failed)
            except psycopg.Error:
                self.outcomes.extendleft(reversed(batch))
                raise
            self._release_claims(failed)
        return [o for o in batch if o.succeeded]

    def _flush(self) -> None:
        """Store every outcome waiting (while stopping, when nothing more is claimed)."""
        succeeded = self._take_outcomes()
        if not succeeded:
            return
        try:
            self._store(succeeded, [])
        except psycopg.Error:
            self.outcomes.extendleft(reversed(succeeded))
            raise
        self._release_claims(succeeded)

    def _release_claims(self, outcomes: list[Outcome]) -> None:
        """Forget the claims these stored outcomes ended."""
        for outcome in outcomes:
            # A late outcome of an abandoned attempt must not end a newer claim.
            if self._holds(outcome):
                del self.claims[outcome.task_id]

    def _abandon_overdue(self) -> None:
        """Fail attempts past their timeout now; their threads are replaced."""
        now = time.monotonic()
        for claim in list(self.claims.values()):
            if claim.deadline <= now:
                seconds = claim.row["timeout_seconds"]
                self._abandon(claim, TaskTimeout(f"attempt ran past its timeout of {seconds} s"),
                              "TaskTimeout")

    def _abandon(self, claim: _Claim, reason: Exception, error_type: str) -> None:
        """End an attempt whose executor is still running: record why, replace its thread."""
        if self._runner(claim.row["task_type"])[0].abandon(claim.call):
            claim.deadline = float("inf")
            claim.cancel_seen_at = None
            self.outcomes.append(failure(claim.row, reason, error_type=error_type))

    def _on_ready_notice(self, payload: str) -> None:
        """Wake now; a task submitted for later also says when it is due (epoch seconds)."""
        try:
            due = float(payload) if payload else None
        except ValueError:  # a NOTIFY sent by hand; waking is enough
            due = None
        if due is not None:
            # Runs on the notifier's thread: hand over through a deque, which is thread-safe.
            self.announced_due.append(time.monotonic() + max(0.0, due - time.time()))
        self.wake.set()

    def _on_cancel_notice(self) -> None:
        self.cancel_check.set()
        self.wake.set()

    def _check_cancels(self) -> None:
        """After a cancel notification, ask which of this worker's tasks it concerns."""
        if not self.cancel_check.is_set():
            return
        self.cancel_check.clear()
        if self.claims:
            rows = self.db.fetch("cancel_requests", self._leases())
            self._cancel_requested(row["id"] for row in rows)

    def _cancel_requested(self, task_ids: Iterable[int]) -> None:
        """Tell executors their task was cancelled; a later lease check stops those that ignore it."""
        now = time.monotonic()
        for task_id in task_ids:
            claim = self.claims.get(task_id)
            if claim is not None and not claim.context.cancelled:
                claim.context.request_cancel()
                claim.cancel_seen_at = now
                log.info("task %s: cancel requested", task_id)

    def _abandon_ignored_cancels(self, since: float) -> None:
        """Executors told to stop a heartbeat interval ago that still run are abandoned."""
        for claim in list(self.claims.values()):
            if claim.cancel_seen_at is not None and claim.cancel_seen_at <= since:
                self._abandon(claim, TaskCancelled(f"task {claim.row['id']} was cancelled"),
                              "Cancelled")

    def _store(self, succeeded: list[Outcome], failed: list[Outcome]) -> None:
        if succeeded:
            failed = failed + self._complete(succeeded)
        if failed:
            self._fail(failed)

    def _complete(self, outcomes: list[Outcome]) -> list[Outcome]:
        """Store results; returns outcomes whose result the database refused, as failures."""
        try:
            rows = self.db.fetch("complete_tasks", {
                "ids": plain_array([o.task_id for o in outcomes]),
                "tokens": plain_array([o.lease_token for o in outcomes]),
                "results": text_array([o.result_json for o in outcomes]),
            })
        except ValidationError:
            if len(outcomes) == 1:
                return [self._unstorable(outcomes[0])]
            return [f for o in outcomes for f in self._complete([o])]
        self._log_dropped(outcomes, rows, "result")
        return []

    def _fail(self, outcomes: list[Outcome]) -> None:
        try:
            rows = self.db.fetch("fail_tasks", {
                "ids": plain_array([o.task_id for o in outcomes]),
                "tokens": plain_array([o.lease_token for o in outcomes]),
                "errors": text_array([json.dumps(o.error) for o in outcomes]),
            })
        except ValidationError:
            # One error the database refuses must not block the others, or
            # the worker: store each alone, and a refused one reduced to its type.
            if len(outcomes) > 1:
                for outcome in outcomes:
                    self._fail([outcome])
                return
            if outcomes[0].error.get("message") == UNSTORABLE_ERROR:
                raise
            self._fail([outcomes[0]._replace(error={
                "type": outcomes[0].error["type"], "message": UNSTORABLE_ERROR,
                "traceback": None, "attempt": outcomes[0].attempt})])
            return
        self._retries_due_in(row["retry_in"] for row in rows)
        self._log_dropped(outcomes, rows, "error")

    def _retries_due_in(self, delays: Iterable[float | None]) -> None:
        """Wake when requeued tasks become ready: no NOTIFY announces them."""
        now = time.monotonic()
        for seconds in delays:
            if seconds is not None:
                heapq.heappush(self.due_times, now + seconds)

    def _unstorable(self, outcome: Outcome) -> Outcome:
        attempt = {"id": outcome.task_id, "lease_token": outcome.lease_token,
                   "attempts": outcome.attempt}
        error = ValueError("the database refused the executor's result")
        return failure(attempt, error, error_type="ResultNotSerializable")

    def _log_dropped(self, outcomes: list[Outcome], rows: list[dict], what: str) -> None:
        stored = {row["id"] for row in rows}
        self._log_lost([o.task_id for o in outcomes if o.task_id not in stored], what)

    def _log_lost(self, task_ids: list[int], what: str) -> None:
        for task_id in task_ids:
            log.warning("task %s: lease no longer held by worker %s; %s dropped",
                        task_id, self.settings.name, what)

    def _heartbeat_if_due(self) -> None:
        now = time.monotonic()
        if now < self.next_heartbeat:
            return
        held = self.db.fetch("heartbeat", {
            "worker_id": self.worker_id, "lease_seconds": self.settings.lease_timeout,
            **self._leases()})
        self._abandon_ignored_cancels(since=now - self.settings.heartbeat_interval)
        self._cancel_requested(row["id"] for row in held if row["cancel_requested"])
        self.next_heartbeat = now + self.settings.heartbeat_interval
        lost = set(self.claims) - {row["id"] for row in held}
        if lost:
            log.warning("worker %s lost the lease of task(s) %s", self.settings.name, sorted(lost))
        for task_id in lost:
            # Another attempt owns the task now: free the slot; a late result is dropped.
            claim = self.claims.pop(task_id)
            self._runner(claim.row["task_type"])[0].abandon(claim.call)

    def _leases(self) -> dict[str, str]:
        """The ids and lease tokens of the tasks this worker holds, as statement parameters."""
        return {"ids": plain_array(self.claims),
                "tokens": plain_array([claim.token for claim in self.claims.values()])}

    def _sweep_if_due(self) -> None:
        now = time.monotonic()
        if self.sweeper is None or now < self.next_sweep:
            return
        counts = self.sweeper.run_once(paced=True)
        self._retries_due_in(counts.retry_in)
        self.next_sweep = now + self.sweeper.pause_after(counts)

    def _schedule_if_due(self) -> None:
        now = time.monotonic()
        if self.scheduler is None or now < self.next_schedule:
            return
        tick_in = self.scheduler.run_once().next_tick_in
        # Look again at the next tick (a hair after it), or sooner for new schedules.
        self.next_schedule = now + min(self.settings.schedule_interval,
                                       float("inf") if tick_in is None else tick_in + 0.001)

    def _pause(self) -> float:
        now = time.monotonic()
        while self.announced_due:
            heapq.heappush(self.due_times, self.announced_due.popleft())
        while self.due_times and self.due_times[0] <= now:
            heapq.heappop(self.due_times)
        deadlines = [claim.deadline for claim in self.claims.values()]
        due = min(self.next_heartbeat, self.next_sweep if self.sweeper else float("inf"),
                  self.next_schedule if self.scheduler else float("inf"),
                  self.due_times[0] if self.due_times else float("inf"),
                  now + self.settings.poll_interval, *deadlines)
        return max(0.0, due - now)

    def _wait_for_running(self, deadline: float) -> None:
        """Wait for executors until ``deadline``, heartbeating so no lease lapses meanwhile."""
        while self.claims and time.monotonic() < deadline:
            # Cleared before taking outcomes: one arriving after that sets it again.
            self.wake.clear()
            try:
                self._flush()
                self._heartbeat_if_due()
            except psycopg.Error as exc:
                log.warning("worker %s: database error while stopping (%s)", self.settings.name,
                            first_line(exc))
                time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
                continue
            if self.claims:
                self.wake.wait(min(self.settings.heartbeat_interval, deadline - time.monotonic()))

    def _drain(self) -> None:
        """Let running executors finish, store them, hand back the rest, deregister."""
        self._wait_for_running(time.monotonic() + self.settings.shutdown_timeout)
        self.threads.shutdown()
        if self.coroutines is not None:
            self.coroutines.shutdown()
        try:
            self._flush()
            if self.claims:
                self.db.fetch("release_tasks", {
                    "ids": plain_array(self.claims),
                    "tokens": plain_array([c.token for c in self.claims.values()])})
                log.warning("worker %s handed back %d unfinished task(s)",
                            self.settings.name, len(self.claims))
            self.db.fetch("stop_worker", {"worker_id": self.worker_id})
        except psycopg.Error as exc:
            log.error("worker %s could not deregister cleanly: %s", self.settings.name, first_line(exc))
