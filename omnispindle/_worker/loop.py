"""The running worker: register, then claim, execute, store and keep leases until stopped.

The loop thread alone talks to the database, but for partial results, which
executors store themselves (``_partials``). Executor threads (and the event
loop of coroutine executors) hand outcomes back through the inbox and wake
the loop. What to do is decided by the parts: the claims held (``_claims``),
the outcomes waiting (``_outcomes``), storing them (``_storage``), leases
(``_leases``), maintenance (``_duties``), when to wake (``_timers``) and where
to claim from (``_claim_cursor``); this module puts them in order.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import socket
import threading
import time
from collections.abc import Iterable
from concurrent.futures import Future
from uuid import UUID

import psycopg

from omnispindle._core.defaults import IDLE_STEP_GAP
from omnispindle._db import queries as q
from omnispindle._db.notifier import CANCEL_CHANNEL, READY_CHANNEL, Listens
from omnispindle._db.pg_arrays import ArrayLiteral, text_array
from omnispindle._db.pool import Database
from omnispindle._db.rows import StepRow
from omnispindle._maintenance.sweeper import error_pause
from omnispindle._version import __version__
from omnispindle._worker._autoscale import PoolSize
from omnispindle._worker._claim_cursor import ClaimCursor
from omnispindle._worker._claims import NO_DEADLINE, Claim, Claims
from omnispindle._worker._duties import Duties
from omnispindle._worker._execution import (
    Outcome,
    around_failure,
    attempt_of,
    failure,
    results_of,
)
from omnispindle._worker._leases import LeaseKeeper, Verdict
from omnispindle._worker._limit_pacing import LIMITS_CHANGED, LimitPacing
from omnispindle._worker._outcomes import Inbox
from omnispindle._worker._partials import Emitter
from omnispindle._worker._runners import Call, Executor, Runners
from omnispindle._worker._stop_bound import StopBound
from omnispindle._worker._storage import OutcomeStore, by_statement
from omnispindle._worker._timers import Timers
from omnispindle._worker.settings import WorkerSettings
from omnispindle.context import TaskContext
from omnispindle.errors import (
    DatabaseUnavailableError,
    LockTimeoutError,
    SchemaMissingError,
    TaskCancelled,
    ValidationError,
    first_line,
)

__all__ = ["Executor", "WorkerLoop"]

log = logging.getLogger("omnispindle.worker")


# What the loop rides out: lost connections, restarts, deadlocks, lock timeouts,
# and a schema gone for a while (a restore, a downgrade run too far).
DATABASE_ERRORS = (psycopg.Error, LockTimeoutError, DatabaseUnavailableError, SchemaMissingError)


class TaskTimeout(Exception):
    """The attempt ran past the task's timeout and was abandoned."""


class ClaimRefused(Exception):
    """The database refused a claim for a row it would take (one written with
    the rules off breaks a rule once running): no result was at fault."""


class WorkerLoop:
    """One run of a worker, from registration to a clean stop.

    Args:
        db: the queue's database.
        notifier: the process's LISTEN connection.
        settings: the worker's settings.
        executors: the executor of each task type it claims.
        capabilities: what it declares (the task types when None).
        stopping: set to stop; wake: set to wake the loop.
    """

    def __init__(
        self,
        db: Database,
        notifier: Listens,
        settings: WorkerSettings,
        executors: dict[str, Executor],
        capabilities: list[str] | None,
        stopping: threading.Event,
        wake: threading.Event,
    ) -> None:
        # Every statement of the worker, bounded once a stop is asked.
        self.db = StopBound(db, settings.shutdown_timeout)
        self.notifier = notifier
        self.settings = settings
        self.task_types = sorted(executors)
        self.capabilities = capabilities if capabilities is not None else self.task_types
        self.claim_arrays: tuple[ArrayLiteral, ArrayLiteral] = (
            text_array(self.task_types),
            text_array(self.capabilities),
        )
        self.stopping, self.wake = stopping, wake
        self.claims = Claims()
        self.inbox = Inbox(wake)
        self.size = settings.concurrency  # executors at once, now
        self.pool = (
            None
            if settings.scaling is None
            else PoolSize(settings.scaling, settings.scale_down_after)
        )
        self.runners = Runners(executors, settings.concurrency, f"omnispindle-{settings.name}")
        self.store = OutcomeStore(self.db, settings.name)
        self.timers = Timers(settings.poll_interval)
        self.leases = LeaseKeeper(
            self.db, self.claims, settings.lease_timeout, settings.heartbeat_interval
        )
        self.duties = Duties(self.db, self.timers, settings.sweeper, settings.schedule_interval)
        self.cursor = ClaimCursor()
        self.pacing = LimitPacing()
        self.cancel_check = threading.Event()
        self.worker_id: UUID | None = None
        self.noticed = False  # a ready notice came since the last step
        self.found_nothing = False  # the last claim claimed nothing, and none is held
        self.idle_step_at: float | None = None  # when a noticed step last found nothing
        # A step failed: its claims (and results) may have committed unseen.
        self.reply_lost = False

    def run(self) -> None:
        """Register, loop until stopping is set, then drain and deregister."""
        worker_id = self._register_once_reachable()
        if worker_id is None:  # stopped before the database could be reached
            self.runners.shutdown()
            self.db.close()
            return
        self.worker_id = self.store.worker_id = worker_id
        log.info(
            "worker %s started (id %s, types %s)", self.settings.name, worker_id, self.task_types
        )
        handles = [
            self.notifier.subscribe(READY_CHANNEL, self._on_ready_notice, with_payload=True),
            self.notifier.subscribe(CANCEL_CHANNEL, self._on_cancel_notice),
        ]
        try:
            self._loop(worker_id)
        finally:
            for handle in handles:
                self.notifier.unsubscribe(handle)
            self._drain_or_hand_back(worker_id)
            self.db.close()
            log.info("worker %s stopped", self.settings.name)

    def stop_asked(self) -> None:
        """Start the stop's clock: from now on, ``shutdown_timeout`` bounds what
        the worker waits for, the database included; from any thread."""
        self.db.stop_asked()

    def stop_now_asked(self) -> None:
        """End the stop's wait at once: running executors are not waited for, and
        their tasks are handed back; from any thread."""
        self.db.cut_short()

    def runs_executors_on(self, thread: threading.Thread) -> bool:
        """Whether ``thread`` runs this worker's executors (its threads or its event loop)."""
        return self.runners.run_on(thread)

    def _register_once_reachable(self) -> UUID | None:
        """Register, waiting out an outage as the loop does: a worker started while
        the database is away (a restart, a failover) would otherwise end at once,
        and an app's worker thread with it. None if stopped before it could."""
        errors = 0
        while not self.stopping.is_set():
            started = time.monotonic()
            try:
                return self._register()
            except DatabaseUnavailableError:  # logged once, by the pool's outage
                errors += 1
                self.stopping.wait(error_pause(errors, started))
        return None

    def _register(self) -> UUID:
        worker_id = self.db.run(
            q.workers.register_worker(
                name=self.settings.name,
                host=socket.gethostname(),
                pid=os.getpid(),
                capabilities=self.capabilities,
                task_types=self.task_types,
                concurrency=self.size,
                version=__version__,
                lease_timeout=self.settings.lease_timeout,
            )
        )
        epoch = self.db.run(q.workers.database_clock())
        self.timers.read_database_clock(epoch, answered=time.monotonic())
        return worker_id

    def _loop(self, worker_id: UUID) -> None:
        errors = 0
        while not self.stopping.is_set():
            self.inbox.linger(self.stopping)
            self._pace()
            self.wake.clear()
            noticed, self.noticed = self.noticed, False
            started = time.monotonic()
            busy = len(self.claims) >= self.size
            try:
                more_ready = self._step(worker_id)
                errors = 0
            except (*DATABASE_ERRORS, ClaimRefused) as exc:
                errors += 1
                self._ride_out(exc, errors, started)
                continue
            if noticed:  # a supervisor that relays notices wakes others while this one is full
                self.notifier.claimed(busy or more_ready)
            self.idle_step_at = time.monotonic() if noticed and self.found_nothing else None
            if self.idle_step_at is not None:
                self._walk_from_head_soon()
            if not more_ready:
                self.wake.wait(self.timers.pause(time.monotonic(), self.claims.next_deadline()))

    def _ride_out(self, exc: Exception, errors: int, started: float) -> None:
        """Lost connections, restarts, deadlocks, lock timeouts, refused claims: all
        pass. Warn of the first of a run, then pause, longer at each in a row."""
        # A refused claim committed nothing; another error's step may have, unseen.
        self.reply_lost = self.reply_lost or not isinstance(exc, ClaimRefused)
        # An outage is logged once, when it starts and ends, by the pool; a
        # statement the stop cancelled (see _stop_bound) is no news.
        quiet = isinstance(exc, DatabaseUnavailableError) or self.stopping.is_set()
        if errors == 1 and not quiet:
            what = "claim refused" if isinstance(exc, ClaimRefused) else "database error"
            log.warning("worker %s: %s (%s); retrying", self.settings.name, what, first_line(exc))
        self.stopping.wait(error_pause(errors, started))

    def _walk_from_head_soon(self) -> None:
        """After a notified claim from the cursor found nothing, wake for a walk
        from the head as soon as one is due."""
        wait = self.cursor.head_walk_in()
        if wait is not None:
            self.timers.due_in([wait], time.monotonic())

    def _pace(self) -> None:
        """Space out noticed steps that find nothing: any role may NOTIFY the ready
        channel, and a flood of notices must not turn into a flood of claims. After
        a step that found work, or while an attempt is held, nothing waits."""
        if self.idle_step_at is not None and not len(self.claims):
            rest = self.idle_step_at + IDLE_STEP_GAP - time.monotonic()
            if rest > 0:
                self.stopping.wait(rest)

    def _step(self, worker_id: UUID) -> bool:
        """Do what is due, store failures, then store results and claim in one statement.

        Returns True when every free slot was filled, so more work may be ready.
        """
        if self.reply_lost:
            self._hand_back_unheld(worker_id)
        self._abandon_overdue()
        self._check_cancels()
        self._heartbeat_if_due(worker_id)
        self._read_limits_if_stale()
        self.duties.run_due()
        self._scale(time.monotonic())
        # Taken last: from here on, a database error hands them back for the next try.
        # Results too large together for one statement go first, in statements of their own.
        *apart, succeeded = by_statement(self._store_failures()) or [[]]
        self._store_runs(apart, held=succeeded)
        return self._complete_and_claim(worker_id, succeeded)

    def _read_limits_if_stale(self) -> None:
        """Read the limits of this worker's task types, which pace its claims only:
        the database enforces them at once."""
        if self.pacing.stale:
            self.pacing.update(self.db.run(q.type_limits.limits_of_types(self.claim_arrays[0])))

    def _scale(self, now: float) -> None:
        """Grow or shrink an auto-scaled pool from what the claims found, before claiming."""
        if self.pool is None:
            return
        size = self.pool.observe(now, len(self.claims))
        if size != self.size:
            log.info("worker %s: concurrency %d -> %d", self.settings.name, self.size, size)
            self.runners.resize(size)
            self.size = size
        wake = self.pool.new_wake()
        if wake is not None:
            self.timers.due_in([wake - now], now)

    def _hand_back_unheld(self, worker_id: UUID) -> None:
        """After a failed step: hand back what it claimed unseen, uncounted, and
        recognise the results it stored as stored."""
        released = self.db.run(
            q.tasks.release_unheld(worker_id, [claim.row["id"] for claim in self.claims])
        )
        if released:
            log.info(
                "worker %s: handed back %d task(s) claimed by a step whose reply was lost",
                self.settings.name,
                len(released),
            )
        self.reply_lost = False
        self.store.after_lost_reply = True

    def _store_failures(self) -> list[Outcome]:
        """Store the failed outcomes waiting; return the succeeded ones, still to store."""
        failed, succeeded = self.inbox.take()
        if failed:
            try:
                self.timers.due_in(self.store.fail(failed), time.monotonic())
            except DATABASE_ERRORS:
                self.inbox.put_back(failed + succeeded)
                raise
            self.claims.release(failed)
        return succeeded

    def _complete_and_claim(self, worker_id: UUID, succeeded: list[Outcome]) -> bool:
        """Store ``succeeded`` and claim for the slots then free: one round trip, one commit."""
        free = self.claims.free_slots(self.size, succeeded)
        if not succeeded and free <= 0:
            return False
        after_priority, after_id = self.cursor.start()
        started = time.monotonic()
        try:
            rows = self.db.run(
                q.tasks.complete_and_claim(
                    results_of(succeeded),
                    task_types=self.claim_arrays[0],
                    capabilities=self.claim_arrays[1],
                    limit=max(free, 0),
                    worker_id=worker_id,
                    lease_seconds=self.settings.lease_timeout,
                    after_priority=after_priority,
                    after_id=after_id,
                )
            )
        except ValidationError as exc:
            if not succeeded:  # a row the claim would take, every time it is tried
                raise ClaimRefused(str(exc)) from exc
            # A result the database refuses: store one by one to find it, then claim.
            self.timers.due_in(self.store.store(succeeded, []), time.monotonic())
            self.claims.release(succeeded)
            return self._complete_and_claim(worker_id, [])
        except DATABASE_ERRORS:
            self.inbox.put_back(succeeded)
            raise
        claimed = [row for row in rows if not row["dropped"]]
        self.store.log_lost([row["id"] for row in rows if row["dropped"]], "result")
        self.claims.release(succeeded)
        self._start(claimed)
        self.found_nothing = not rows and not len(self.claims)
        self.inbox.running(len(self.claims))
        if free > 0:
            walked = self.pacing.walked(claimed)
            self.cursor.move(
                walked, free - (len(claimed) - len(walked)), time.monotonic() - started
            )
            self._recheck_limits_soon(free - len(claimed), len(claimed))
            if self.pool is not None:
                self.pool.claimed(free, len(claimed))
        return 0 < free == len(claimed)

    def _recheck_limits_soon(self, empty_slots: int, found: int) -> None:
        """A claim that left slots empty may have been held back by a limit: try again
        once room may have freed up, rather than after the poll interval."""
        if empty_slots > 0:
            wait = self.pacing.recheck_in(found)
            if wait is not None:
                self.timers.due_in([wait], time.monotonic())

    def _start(self, rows: list[StepRow]) -> None:
        """Hand claimed rows to their executors."""
        now = time.monotonic()
        for row in rows:
            self._lose_older_attempt(row["id"])
            context = TaskContext(
                row["id"],
                row["task_type"],
                row["attempts"],
                row["max_attempts"],
                _emit=Emitter(self.db, row),
            )
            call = self.runners.start(row, context, functools.partial(self._on_done, row))
            timeout = row["timeout_seconds"]
            self.claims.add(Claim(row, context, call, now + timeout if timeout else NO_DEADLINE))

    def _lose_older_attempt(self, task_id: int) -> None:
        """An attempt still held of a task claimed again has lost its lease (the task was
        set back to pending, by hand say, before a heartbeat found out): give it up as a
        heartbeat would, or it ran on, never told to stop, beside the new one."""
        older = self.claims.drop(task_id)
        if older is not None:
            self._follow(Verdict(lost=[older]))

    def _on_done(self, row: StepRow, call: Call) -> None:
        """Runs on the executor's thread (or event loop) as soon as its call ends."""
        if isinstance(call, Future) and call.cancelled():
            return  # an abandoned coroutine: its attempt's end is handled already
        try:
            outcome = call.result()
        except BaseException as exc:  # noqa: BLE001 - never lose an attempt's end
            # Something around the executor broke: the attempt still ends, or its
            # slot and lease would be held for as long as the worker heartbeats.
            outcome = around_failure(row, exc)
        self.inbox.put(outcome)

    def _abandon(self, claim: Claim, reason: Exception, error_type: str) -> None:
        """End an attempt whose executor is still running: record why, replace its thread."""
        if self.runners.abandon(claim.call):
            claim.abandoned()
            self.inbox.put(failure(attempt_of(claim.row), reason, error_type=error_type))

    def _abandon_overdue(self) -> None:
        """Fail attempts past their timeout now; their threads are replaced."""
        for claim in self.claims.overdue(time.monotonic()):
            seconds = claim.row["timeout_seconds"]
            self._abandon(
                claim, TaskTimeout(f"attempt ran past its timeout of {seconds} s"), "TaskTimeout"
            )

    def _on_ready_notice(self, payload: str) -> None:
        """Wake now; a task submitted for later also says when it is due (epoch seconds),
        and a change of limits says so."""
        if payload == LIMITS_CHANGED:
            self.pacing.stale = True
        try:
            due = float(payload) if payload else None
        except ValueError:  # a NOTIFY sent by hand; waking is enough
            due = None
        if due is not None and math.isfinite(due):
            self.timers.announce(due)
        self.noticed = True
        self.wake.set()

    def _on_cancel_notice(self) -> None:
        self.cancel_check.set()
        self.wake.set()

    def _check_cancels(self) -> None:
        """After a cancel notification, ask which of this worker's tasks it concerns."""
        if self.cancel_check.is_set():
            self.cancel_check.clear()
            self._told_to_stop(
                self.claims.ask_to_stop(self.leases.cancel_requests(), time.monotonic())
            )

    def _told_to_stop(self, task_ids: Iterable[int]) -> None:
        for task_id in task_ids:
            log.info("task %s: cancel requested", task_id)

    def _heartbeat_if_due(self, worker_id: UUID) -> None:
        now = time.monotonic()
        if now >= self.timers.heartbeat_at:
            self._follow(self.leases.beat(worker_id, now, self.size))
            self.pacing.stale = True
            self.timers.heartbeat_at = now + self.settings.heartbeat_interval

    def _follow(self, verdict: Verdict) -> None:
        """Carry out what a heartbeat found: stop ignored cancels, give up lost leases."""
        for claim in verdict.ignoring_cancel:
            self._abandon(
                claim, TaskCancelled(f"task {claim.row['id']} was cancelled"), "Cancelled"
            )
        self._told_to_stop(verdict.asked_to_stop)
        if verdict.lost:
            log.warning(
                "worker %s lost the lease of task(s) %s",
                self.settings.name,
                [claim.row["id"] for claim in verdict.lost],
            )
        # Another attempt owns those tasks now: free the slots; late results are dropped.
        for claim in verdict.lost:
            claim.abandoned()
        self.runners.abandon_all(claim.call for claim in verdict.lost)

    def _flush(self) -> None:
        """Store every outcome waiting (while stopping, when nothing more is claimed)."""
        self._store_runs(by_statement(self._store_failures()))
        self.inbox.running(len(self.claims))

    def _store_runs(self, runs: list[list[Outcome]], held: list[Outcome] | None = None) -> None:
        """Store results one statement a run; on a database error, those not stored
        go back to the inbox, and ``held`` (results yet to store) after them."""
        for done, run in enumerate(runs):
            try:
                self.timers.due_in(self.store.store(run, []), time.monotonic())
            except DATABASE_ERRORS:
                self.inbox.put_back([o for rest in runs[done:] for o in rest] + (held or []))
                raise
            self.claims.release(run)

    def _wait_for_running(self, worker_id: UUID) -> None:
        """Wait for executors until the stop's deadline, heartbeating so no lease
        lapses meanwhile."""
        while len(self.claims) and self.db.left() > 0:
            # Cleared before taking outcomes: one arriving after that sets it again.
            self.wake.clear()
            try:
                self._flush()
                self._heartbeat_if_due(worker_id)
            except DATABASE_ERRORS as exc:
                log.warning(
                    "worker %s: database error while stopping (%s)",
                    self.settings.name,
                    first_line(exc),
                )
                self.stopping.wait(min(1.0, max(0.0, self.db.left())))
                continue
            if len(self.claims):
                self.wake.wait(min(self.settings.heartbeat_interval, max(0.0, self.db.left())))

    def _drain_or_hand_back(self, worker_id: UUID) -> None:
        """Drain; a Ctrl-C meanwhile (a second one, in a worker started in the main
        thread), or a SystemExit from a signal handler that calls sys.exit(), cuts
        the wait short and hands the running tasks back, then goes on up: it left
        them running until their leases lapsed, and the worker active."""
        try:
            self._drain(worker_id)
        except (KeyboardInterrupt, SystemExit):
            self.db.cut_short()
            self._drain(worker_id)
            raise

    def _drain(self, worker_id: UUID) -> None:
        """Let running executors finish, store them, hand back the rest and the
        maintenance duties, deregister: within the stop's deadline, after which
        what is left is left to the leases (see ``_stop_bound``)."""
        self.db.stop_asked()  # already, unless the stop came before the loop was known
        self._wait_for_running(worker_id)
        self.runners.shutdown()
        try:
            self._flush()
            self._hand_back()
            self.duties.give_up()
            self.db.run(q.workers.stop_worker(worker_id))
        except DATABASE_ERRORS as exc:
            log.error(
                "worker %s could not deregister cleanly: %s; its tasks are left to their leases",
                self.settings.name,
                first_line(exc),
            )

    def _hand_back(self) -> None:
        if len(self.claims):
            for claim in self.claims:
                claim.abandoned()
            ids, tokens = self.claims.leases()
            self.db.run(q.tasks.release_tasks(ids=ids, tokens=tokens))
            log.warning("worker %s handed back %d unfinished task(s)", self.settings.name, len(ids))
