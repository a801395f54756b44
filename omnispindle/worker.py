"""``WorkerClient``: runs registered executors for the tasks it claims."""

from __future__ import annotations

import atexit
import functools
import logging
import os
import threading
import weakref
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from omnispindle import registry
from omnispindle._core import defaults, validation
from omnispindle._worker.loop import Executor, WorkerLoop
from omnispindle._worker.settings import worker_settings
from omnispindle._worker.stop_relay import StopRelay
from omnispindle.errors import ConfigurationError, ValidationError
from omnispindle.task_queue import TaskQueue, open_queue

__all__ = ["Executor", "WorkerClient"]

log = logging.getLogger("omnispindle.worker")
F = TypeVar("F", bound=Callable[..., Any])
# The workers running in this process; a forked child runs none of its parent's.
_running: weakref.WeakSet[WorkerClient] = weakref.WeakSet()
os.register_at_fork(after_in_child=_running.clear)


@atexit.register
def _stop_at_exit() -> None:
    """At the interpreter's exit, a worker still running runs in a daemon thread (the
    interpreter has waited for the others) about to be killed: hand its tasks back
    and mark it stopped, or they stayed running until their leases lapsed, and it
    active until the sweeper declared it dead."""
    for worker in list(_running):
        worker.stop(now=True)


class WorkerClient:
    """A worker: claims tasks it can run and runs them in threads, coroutines on an event loop.

    Args:
        local_queue: a TaskQueue in this process, or
        dsn: a database to connect to.
        capabilities: the task types (and extra capability tags) this worker
            takes; None means every type it has an executor for.
        concurrency: executors running at once (threads and coroutines together);
            1 by default. With ``min_concurrency`` and ``max_concurrency``, where
            the pool starts (by default at the minimum).
        min_concurrency: with ``max_concurrency``, the worker scales its pool
            between them: it grows while every slot is busy and its claims keep
            filling every slot freed (a step at most each second), and shrinks
            to the most it used once some slots stayed idle for
            ``scale_down_after`` seconds. Its current concurrency is in
            ``omnispindle.workers`` from its next heartbeat on.
        max_concurrency: the most executors an auto-scaled pool runs at once.
        scale_down_after: seconds slots stay idle before an auto-scaled pool shrinks.
        name: shown in ``omnispindle.workers``; default ``HOST-PID-N``, unique in a fleet.
        poll_interval: longest pause, in seconds, between checks for work
            when no notification arrives.
        lease_timeout: seconds a claim stays valid without a heartbeat.
        heartbeat_interval: seconds between heartbeats, shorter than the
            lease (default a third of it).
        shutdown_timeout: seconds ``stop()`` lets running executors finish
            before handing their tasks back; the stop ends a second after it
            (or after the pool's wait for a connection, if longer), even with
            the database away: what is left is left to the leases.
        sweep_interval: seconds between this worker's passes of the
            stale-lease sweeper; None leaves sweeping to other processes.
        dead_worker_after: seconds without a heartbeat before the sweeper
            declares a worker dead.
        schedule_interval: longest pause, in seconds, between this worker's
            looks at the periodic schedules (it also wakes at each tick);
            None leaves enqueuing periodic tasks to other workers.
        retention: seconds the sweeper keeps finished tasks before deleting
            them (default a week); None keeps them forever.
        archive_after: seconds a finished task stays in ``tasks`` before the
            sweeper moves it to the partitioned history, where the retention
            drops whole partitions; None (the default) prunes ``tasks``.
        schema: the schema of the worker's own queue, as for ``TaskQueue``.

    Raises:
        ValidationError: a setting has the wrong type or range; only one of
            ``min_concurrency`` and ``max_concurrency``; a minimum above the
            maximum, or ``concurrency`` outside them.
        ConfigurationError: ``schema`` with ``local_queue`` (give it to the queue).

    Example:
        >>> worker = WorkerClient(local_queue=queue, capabilities=["math"])  # doctest: +SKIP
        >>> worker.register_task_executor("math", lambda task: {"result": 1})  # doctest: +SKIP
        >>> worker.start()   # blocks until worker.stop()  # doctest: +SKIP
    """

    def __init__(
        self,
        local_queue: TaskQueue | None = None,
        dsn: str | None = None,
        capabilities: Iterable[str] | None = None,
        *,
        concurrency: int | None = None,
        min_concurrency: int | None = None,
        max_concurrency: int | None = None,
        scale_down_after: float = defaults.SCALE_DOWN_AFTER,
        name: str | None = None,
        poll_interval: float = defaults.POLL_INTERVAL,
        lease_timeout: float = defaults.LEASE_TIMEOUT,
        heartbeat_interval: float | None = None,
        shutdown_timeout: float = defaults.SHUTDOWN_TIMEOUT,
        sweep_interval: float | None = defaults.SWEEP_INTERVAL,
        dead_worker_after: float = defaults.DEAD_WORKER_AFTER,
        schedule_interval: float | None = defaults.SCHEDULE_INTERVAL,
        retention: float | None = defaults.RETENTION,
        archive_after: float | None = None,
        schema: str | None = None,
    ) -> None:
        self.settings = worker_settings(
            concurrency=concurrency,
            min_concurrency=min_concurrency,
            max_concurrency=max_concurrency,
            scale_down_after=scale_down_after,
            name=name,
            poll_interval=poll_interval,
            lease_timeout=lease_timeout,
            heartbeat_interval=heartbeat_interval,
            shutdown_timeout=shutdown_timeout,
            sweep_interval=sweep_interval,
            dead_worker_after=dead_worker_after,
            schedule_interval=schedule_interval,
            retention_seconds=retention,
            archive_after=archive_after,
        )
        self.capabilities = (
            None if capabilities is None else list(validation.names("capabilities", capabilities))
        )
        self.queue, self._owns_queue = open_queue(local_queue, dsn, schema=schema)
        self._executors: dict[str, Executor] = {}
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._exited = threading.Event()
        self._loop_thread: threading.Thread | None = None
        self._run: WorkerLoop | None = None
        self._relay: StopRelay | None = None

    def register_task_executor(self, task_type: str, fn: Executor) -> None:
        """Run ``fn(task_data) -> dict`` for tasks of ``task_type``.

        ``fn`` may be a coroutine function (``async def``): it then runs on an
        event loop the worker owns, and abandoning its attempt (timeout,
        ignored cancel, lost lease) cancels it. It must not block that loop.

        Raises:
            ValidationError: ``task_type`` is not a non-empty string or ``fn`` is not callable.
        """
        validation.task_type(task_type)
        if not callable(fn):
            raise ValidationError(f"the executor for {task_type!r} must be callable")
        self._executors[task_type] = fn

    def task(
        self,
        task_type: str,
        *,
        priority: int | None = None,
        max_retries: int | None = None,
        timeout: float | None = None,
        retry_backoff: float | None = None,
        required_capabilities: Iterable[str] | None = None,
    ) -> Callable[[F], F]:
        """Declare the decorated function with [task][omnispindle.task] (so that
        submissions in this process take its defaults) and run it on this worker.

        Example:
            >>> @worker.task("resize", timeout=30)  # doctest: +SKIP
            ... def resize(task_data): ...
        """
        declare = registry.task(
            task_type,
            priority=priority,
            max_retries=max_retries,
            timeout=timeout,
            retry_backoff=retry_backoff,
            required_capabilities=required_capabilities,
        )

        def declare_and_register(fn: F) -> F:
            self.register_task_executor(task_type, declare(fn))
            return fn

        return declare_and_register

    def register_declared_tasks(self) -> None:
        """Run every task declared in this process (with ``@task``) on this worker."""
        for declared in registry.declared_tasks():
            self.register_task_executor(declared.task_type, declared.fn)

    @property
    def task_types(self) -> list[str]:
        """The task types this worker claims: its executors, limited to its capabilities."""
        types = sorted(self._executors)
        if self.capabilities is None:
            return types
        return [t for t in types if t in self.capabilities]

    def start(self) -> None:
        """Register, then claim and run tasks until
        [stop][omnispindle.worker.WorkerClient.stop] is called. Blocks.

        With the database away, it waits for it to come back before it
        registers, as it rides out an outage later on.

        Raises:
            ConfigurationError: already running, an executor's task type is not among the
                declared capabilities, or no executor matches them.
        """
        if self._loop_thread is not None:
            raise ConfigurationError("this worker is already running or has run; create a new one")
        if not self.task_types:
            raise ConfigurationError(
                f"worker {self.settings.name!r} can run no task type: executors "
                f"{sorted(self._executors)}, capabilities {self.capabilities}"
            )
        unused = sorted(set(self._executors) - set(self.task_types))
        if unused:
            raise ConfigurationError(
                f"worker {self.settings.name!r} would never run its executors for {unused}: "
                f"they are not among its capabilities {self.capabilities}; add them there, "
                "or do not register them on this worker"
            )
        self._loop_thread = threading.current_thread()
        _running.add(self)
        # A queue of the caller's shut down under the worker: stop it while it can
        # hand its tasks back, rather than crash on the closed pool, leaving them.
        take_back = self.queue.stop_first(functools.partial(self.stop, now=True))
        # Only the main thread runs signal handlers, which must not set the events.
        if self._loop_thread is threading.main_thread():
            self._relay = StopRelay(self._ask_to_stop)
        try:
            if not self._stopping.is_set():
                executors = {t: self._executors[t] for t in self.task_types}
                self._run = WorkerLoop(
                    self.queue.db,
                    self.queue.notifier,
                    self.settings,
                    executors,
                    self.capabilities,
                    self._stopping,
                    self._wake,
                )
                self._run.run()
        finally:
            take_back()
            _running.discard(self)
            if self._relay is not None:
                self._relay.close()
            self._exited.set()
            if self._owns_queue:
                self.queue.shutdown()

    def stop(self, timeout: float | None = None, *, now: bool = False) -> None:
        """Ask the worker to stop: no new claims, running executors may finish.

        Called from another thread, waits up to ``timeout`` seconds (None: until
        the worker has stopped). Called from a signal handler in the worker's
        own thread, or from one of its executors, returns at once: the worker
        waits for that executor, so waiting for the worker would have each
        wait for the other until ``shutdown_timeout`` handed the task back.

        ``now``: do not wait for running executors, hand their tasks back at
        once (a second Ctrl-C); also cuts short a stop already under way.
        """
        me = threading.current_thread()
        relay = self._relay
        if me is self._loop_thread and relay is not None:
            relay.ask(now)  # a signal handler, maybe inside one of the events' waits
            return
        self._ask_to_stop(now)
        if self._loop_thread in (None, me) or self._runs_executors_on(me):
            return
        self._exited.wait(timeout)

    def _ask_to_stop(self, now: bool = False) -> None:
        self._stopping.set()
        run = self._run
        if run is not None:
            run.stop_asked()
            if now:
                run.stop_now_asked()
        self._wake.set()

    def _runs_executors_on(self, thread: threading.Thread) -> bool:
        """Whether ``thread`` runs this worker's executors, which stopping waits for."""
        run = self._run
        return run is not None and run.runs_executors_on(thread)
