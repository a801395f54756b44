"""``WorkerClient``: runs registered executors for the tasks it claims."""

from __future__ import annotations

import itertools
import logging
import threading
from typing import Any, Callable, Iterable

from . import validation
from .errors import ConfigurationError, ValidationError
from .queue_handle import resolve_queue
from .retention import DEFAULT_RETENTION, horizon
from .sweeper import SweeperConfig
from .worker_loop import WorkerLoop, WorkerSettings

log = logging.getLogger("omnispindle.worker")
_names = itertools.count(1)

Executor = Callable[[dict[str, Any]], Any]


class WorkerClient:
    """A worker: claims tasks it can run and runs them in threads, coroutines on an event loop.

    Args:
        local_queue: a TaskQueue in this process, or
        dsn: a database to connect to.
        capabilities: the task types (and extra capability tags) this worker
            takes; None means every type it has an executor for.
        concurrency: executors running at once (threads and coroutines together).
        name: shown in ``omnispindle.workers``; default ``worker-N``.
        poll_interval: longest pause, in seconds, between checks for work
            when no notification arrives.
        lease_timeout: seconds a claim stays valid without a heartbeat.
        heartbeat_interval: seconds between heartbeats (default a third of
            the lease).
        shutdown_timeout: seconds ``stop()`` lets running executors finish
            before handing their tasks back.
        sweep_interval: seconds between this worker's passes of the
            stale-lease sweeper; None leaves sweeping to other processes.
        dead_worker_after: seconds without a heartbeat before the sweeper
            declares a worker dead.
        schedule_interval: longest pause, in seconds, between this worker's
            looks at the periodic schedules (it also wakes at each tick);
            None leaves enqueuing periodic tasks to other workers.
        retention: seconds the sweeper keeps finished tasks before deleting
            them (default a week); None keeps them forever.

    Raises:
        ValidationError: a setting has the wrong type or range.

    Example:
        >>> worker = WorkerClient(local_queue=queue, capabilities=["math"])  # doctest: +SKIP
        >>> worker.register_task_executor("math", lambda task: {"result": 1})  # doctest: +SKIP
        >>> worker.start()   # blocks until worker.stop()  # doctest: +SKIP
    """

    def __init__(self, local_queue: Any = None, dsn: str | None = None,
                 capabilities: Iterable[str] | None = None, *, concurrency: int = 1,
                 name: str | None = None, poll_interval: float = 1.0,
                 lease_timeout: float = 30.0, heartbeat_interval: float | None = None,
                 shutdown_timeout: float = 30.0, sweep_interval: float | None = 1.0,
                 dead_worker_after: float = 60.0,
                 schedule_interval: float | None = 1.0,
                 retention: float | None = DEFAULT_RETENTION) -> None:
        validation.int_in_range("concurrency", concurrency, (1, 1000))
        lease = validation.positive_number("lease_timeout", lease_timeout)
        horizon("retention", retention, allow_none=True)  # also when this worker never sweeps
        self.settings = WorkerSettings(
            name=name or f"worker-{next(_names)}",
            concurrency=concurrency,
            poll_interval=validation.positive_number("poll_interval", poll_interval),
            lease_timeout=lease,
            heartbeat_interval=validation.positive_number(
                "heartbeat_interval", heartbeat_interval, allow_none=True) or lease / 3,
            shutdown_timeout=validation.positive_number("shutdown_timeout", shutdown_timeout),
            sweeper=None if sweep_interval is None else SweeperConfig(
                interval=sweep_interval, dead_worker_after=dead_worker_after,
                retention=retention),
            schedule_interval=validation.positive_number(
                "schedule_interval", schedule_interval, allow_none=True),
        )
        self.capabilities = None if capabilities is None else list(
            validation.names("capabilities", capabilities))
        self.queue, self._owns_queue = resolve_queue(local_queue, dsn)
        self._executors: dict[str, Executor] = {}
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._exited = threading.Event()
        self._loop_thread: threading.Thread | None = None

    def register_task_executor(self, task_type: str, fn: Executor) -> None:
        """Run ``fn(task_data) -> dict`` for tasks of ``task_type``.

        ``fn`` may be a coroutine function (``async def``): it then runs on an
        event loop the worker owns, and abandoning its attempt (timeout,
        ignored cancel, lost lease) cancels it. It must not block that loop.

        Raises:
            ValidationError: ``task_type`` is not a non-empty string or ``fn`` is not callable.
        """
        validation.task_spec(task_type)
        if not callable(fn):
            raise ValidationError(f"the executor for {task_type!r} must be callable")
        self._executors[task_type] = fn

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

        Raises:
            ConfigurationError: already running, or no executor matches the capabilities.
        """
        if self._loop_thread is not None:
            raise ConfigurationError("this worker is already running or has run; create a new one")
        if not self.task_types:
            raise ConfigurationError(
                f"worker {self.settings.name!r} can run no task type: executors "
                f"{sorted(self._executors)}, capabilities {self.capabilities}")
        self._loop_thread = threading.current_thread()
        try:
            if not self._stopping.is_set():
                loop = WorkerLoop(self.queue, self.settings, dict(self._executors),
                                  self.task_types, self.capabilities, self._stopping, self._wake)
                loop.run()
        finally:
            self._exited.set()
            if self._owns_queue:
                self.queue.shutdown()

    def stop(self, timeout: float | None = None) -> None:
        """Ask the worker to stop: no new claims, running executors may finish.

        Called from another thread, waits up to ``timeout`` seconds (None: until
        the worker has stopped); called from a signal handler in the worker's
        own thread, returns at once.
        """
        self._stopping.set()
        self._wake.set()
        loop_thread = self._loop_thread
        if loop_thread is not None and loop_thread is not threading.current_thread():
            self._exited.wait(timeout)
