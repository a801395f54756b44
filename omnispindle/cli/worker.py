"""``omnispindle worker`` and ``omnispindle sweep``: processes that run until a signal."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from omnispindle._core import defaults
from omnispindle._core.scaling import Bounds, bounds
from omnispindle.cli.args import (
    given_dsn,
    given_schema,
    int_arg,
    migrate_argument,
    positive_seconds_arg,
    queue_of,
    retention_arguments,
)
from omnispindle.cli.complain import complain
from omnispindle.cli.exit_codes import EXIT_OK, EXIT_USAGE
from omnispindle.cli.process_scaling import ProcessScaling
from omnispindle.cli.signals import on_stop_signals
from omnispindle.cli.supervisor import (
    MAX_PROCESSES,
    STOP_MARGIN,
    AutoScaling,
    Supervisor,
    child_command,
    die_with_supervisor,
)
from omnispindle.errors import ConfigurationError, ValidationError

if TYPE_CHECKING:
    from omnispindle.cli.wake_relay import WakeRelay
    from omnispindle.task_queue import TaskQueue
    from omnispindle.worker import Executor

log = logging.getLogger("omnispindle.cli")


def add_commands(commands: Any, command: Callable[..., argparse.ArgumentParser]) -> None:
    """Add ``worker`` and ``sweep`` to the ``omnispindle`` subparsers."""
    worker = command(commands, "worker", "run a worker until SIGTERM or SIGINT", _worker)
    worker.add_argument(
        "--executors",
        required=True,
        type=module_name_arg,
        metavar="MODULE",
        help="module defining register(worker) or an EXECUTORS dict; found from the "
        "current directory too, as `python -m` finds it",
    )
    worker.add_argument(
        "--capabilities",
        default=None,
        help="comma-separated task types and tags (spaces around the commas are ignored); "
        "only the module's executors among them run (default: all its executors)",
    )
    concurrency = int_arg("concurrency", defaults.CONCURRENCY_RANGE)
    worker.add_argument(
        "--concurrency",
        type=concurrency,
        default=None,
        help="tasks run at once, each in its own thread (default 1); with "
        "--min-concurrency and --max-concurrency, where the pool starts (by default the minimum)",
    )
    worker.add_argument(
        "--min-concurrency",
        metavar="N",
        type=concurrency,
        default=None,
        help="with --max-concurrency: scale the tasks run at once between the two, "
        "growing while every slot is busy and claims keep finding work, shrinking when idle",
    )
    worker.add_argument(
        "--max-concurrency",
        metavar="N",
        type=concurrency,
        default=None,
        help="see --min-concurrency",
    )
    processes = int_arg("processes", (1, MAX_PROCESSES))
    worker.add_argument(
        "--processes",
        type=processes,
        default=None,
        help="worker processes to start and supervise, for CPU-bound executors; each runs "
        "--concurrency tasks, is restarted if it dies, and is stopped with this command "
        "(default 1); with --min-processes and --max-processes, how many to start with "
        "(by default the minimum)",
    )
    worker.add_argument(
        "--min-processes",
        metavar="N",
        type=processes,
        default=None,
        help="with --max-processes: scale the worker processes between the two from the "
        "ready backlog of their task types, read every few seconds (needs --dsn)",
    )
    worker.add_argument(
        "--max-processes", metavar="N", type=processes, default=None, help="see --min-processes"
    )
    worker.add_argument(
        "--scale-down-after",
        type=positive_seconds_arg,
        default=defaults.SCALE_DOWN_AFTER,
        help="seconds capacity stays unused before an auto-scaled pool of tasks or "
        "processes shrinks",
    )
    worker.add_argument(
        "--name", default=None, help="name shown in status and errors (default HOST-PID-N)"
    )
    worker.add_argument(
        "--poll-interval",
        type=positive_seconds_arg,
        default=defaults.POLL_INTERVAL,
        help="most seconds between checks for work without a notification",
    )
    worker.add_argument(
        "--lease-timeout",
        type=positive_seconds_arg,
        default=defaults.LEASE_TIMEOUT,
        help="seconds a claim stays valid without a heartbeat",
    )
    worker.add_argument(
        "--heartbeat-interval",
        type=positive_seconds_arg,
        default=None,
        help="seconds between heartbeats, shorter than the lease (default a third of it)",
    )
    worker.add_argument(
        "--shutdown-timeout",
        type=positive_seconds_arg,
        default=defaults.SHUTDOWN_TIMEOUT,
        help="seconds running tasks get to finish on stop",
    )
    worker.add_argument(
        "--sweep-interval",
        type=positive_seconds_arg,
        default=defaults.SWEEP_INTERVAL,
        help="seconds between stale-lease sweeps in this worker",
    )
    worker.add_argument(
        "--no-sweep",
        action="store_true",
        help="leave sweeping to a dedicated `omnispindle sweep` process",
    )
    worker.add_argument(
        "--no-periodic", action="store_true", help="leave enqueuing periodic tasks to other workers"
    )
    retention_arguments(worker)
    migrate_argument(worker)

    sweep = command(
        commands, "sweep", "run the stale-lease sweeper until SIGTERM or SIGINT", _sweep
    )
    sweep.add_argument(
        "--interval",
        type=positive_seconds_arg,
        default=defaults.SWEEP_INTERVAL,
        help="seconds between passes",
    )
    sweep.add_argument(
        "--batch-size",
        type=int_arg("batch size", (1, defaults.MAX_BATCH_SIZE)),
        default=defaults.SWEEP_BATCH_SIZE,
        help="most expired leases handled per statement",
    )
    sweep.add_argument(
        "--dead-worker-after",
        type=positive_seconds_arg,
        default=defaults.DEAD_WORKER_AFTER,
        help="seconds without a heartbeat before a worker is declared dead",
    )
    sweep.add_argument("--once", action="store_true", help="one pass, print its counts, exit")
    retention_arguments(sweep)
    migrate_argument(sweep)


def module_name_arg(text: str) -> str:
    """Parse ``--executors`` for argparse: dotted names, as ``python -m`` takes them;
    a path, or nothing, failed deep in importlib with a traceback."""
    if not all(part.isidentifier() for part in text.split(".")):
        raise argparse.ArgumentTypeError(
            f"invalid module {text!r}: a module name as `python -m` takes it "
            "(tasks, myapp.tasks), not a path; run the worker from the module's directory "
            "or put it on PYTHONPATH"
        )
    return text


def _worker(args: argparse.Namespace) -> int:
    try:
        bounds(
            "concurrency",
            args.concurrency,
            args.min_concurrency,
            args.max_concurrency,
            defaults.CONCURRENCY_RANGE,
            options=True,
        )
        processes = bounds(
            "processes",
            args.processes,
            args.min_processes,
            args.max_processes,
            (1, MAX_PROCESSES),
            options=True,
        )
    except ValidationError as exc:
        complain(f"omnispindle: {exc} (see `omnispindle worker --help`)")
        return EXIT_USAGE
    most = (args.processes or 1) if processes is None else processes.high
    if most > 1:
        check_settings(args)
        return _supervise(args, processes)
    die_with_supervisor()
    with queue_of(args, migrate=args.migrate) as queue:
        hear_relayed_notifications(queue)
        return _run_worker(args, queue)


def check_settings(args: argparse.Namespace) -> None:
    """Refuse, in a supervisor, the worker settings each of its children would refuse:
    restarted each time they exit, they would refuse them for ever.

    Raises:
        ValidationError: as ``WorkerClient`` would.
        ConfigurationError: a ``--listen-dsn`` or ``--read-dsn`` libpq cannot parse.
    """
    from omnispindle._db.connecting import check_other_dsns
    from omnispindle._worker.settings import worker_settings

    check_other_dsns(args.listen_dsn, args.read_dsn)
    options = worker_options(args)
    retention = options.pop("retention")
    worker_settings(
        **options, retention_seconds=retention, dead_worker_after=defaults.DEAD_WORKER_AFTER
    )


def worker_options(args: argparse.Namespace) -> dict[str, Any]:
    """The ``WorkerClient`` settings the command line gives."""
    return {
        "concurrency": args.concurrency,
        "min_concurrency": args.min_concurrency,
        "max_concurrency": args.max_concurrency,
        "scale_down_after": args.scale_down_after,
        "name": args.name,
        "poll_interval": args.poll_interval,
        "lease_timeout": args.lease_timeout,
        "heartbeat_interval": args.heartbeat_interval,
        "shutdown_timeout": args.shutdown_timeout,
        "sweep_interval": None if args.no_sweep else args.sweep_interval,
        "schedule_interval": None if args.no_periodic else defaults.SCHEDULE_INTERVAL,
        "retention": None if args.no_prune else args.retention,
        "archive_after": args.archive_after,
    }


def hear_relayed_notifications(queue: TaskQueue) -> None:
    """In a child of a supervisor that relays notifications: hear them from its pipe."""
    from omnispindle._db.relayed_notifier import (
        REPORT_FD_VARIABLE,
        WAKE_FD_VARIABLE,
        RelayedNotifier,
    )

    fd = os.environ.pop(WAKE_FD_VARIABLE, None)
    report_fd = os.environ.pop(REPORT_FD_VARIABLE, None)
    if fd is not None:
        relayed = RelayedNotifier(
            int(fd),
            queue.listen_dsn,
            namespace=queue.namespace,
            report_fd=None if report_fd is None else int(report_fd),
        )
        queue.listen_through(relayed)


def _supervise(args: argparse.Namespace, processes: Bounds | None) -> int:
    """Run children of this command line, each one worker: ``--processes`` of them, or
    from ``--min-processes`` to ``--max-processes`` as the backlog asks."""

    def command_of(slot: int) -> list[str]:
        return child_command(args.argv, slot, args.name, scaled=processes is not None)

    stop_timeout = args.shutdown_timeout + STOP_MARGIN
    relay = _relay(args)
    try:
        if processes is None:
            return Supervisor(command_of, args.processes, stop_timeout, relay=relay).run()
        return _supervise_scaled(args, processes, command_of, stop_timeout, relay)
    finally:
        if relay is not None:
            relay.close()


def _relay(args: argparse.Namespace) -> WakeRelay | None:
    """The supervisor's LISTEN connection for its children, on the DSN a worker would
    listen on; None without one (the embedded database, or a pooler alone)."""
    dsn = given_dsn(args)
    listen_dsn = args.listen_dsn or (None if args.pooler else dsn)
    if listen_dsn is None:
        return None
    from omnispindle._db.namespace import Namespace
    from omnispindle.cli.wake_relay import WakeRelay

    return WakeRelay(listen_dsn, Namespace.chosen(given_schema(args)))


def _supervise_scaled(
    args: argparse.Namespace,
    processes: Bounds,
    command_of: Callable[[int], list[str]],
    stop_timeout: float,
    relay: WakeRelay | None,
) -> int:
    """Supervise from ``--min-processes`` to ``--max-processes`` children, as the backlog asks."""
    dsn = given_dsn(args)
    if dsn is None:
        complain(
            "omnispindle: --max-processes reads the backlog from the database: give --dsn "
            "(or $OMNISPINDLE_DSN)"
        )
        return EXIT_USAGE
    from omnispindle.cli.backlog import BacklogReader  # on use: the command line starts fast

    reader = BacklogReader(dsn, schema=given_schema(args), pooler=args.pooler)
    per_process = args.max_concurrency or args.concurrency or defaults.CONCURRENCY
    scaling = AutoScaling(
        ProcessScaling(processes, per_process, args.scale_down_after), reader.read, reader.cancel
    )
    try:
        return Supervisor(command_of, processes.start, stop_timeout, scaling, relay).run()
    finally:
        reader.close()


def _run_worker(args: argparse.Namespace, queue: TaskQueue) -> int:
    from omnispindle.worker import WorkerClient

    capabilities = capability_names(args.capabilities)
    worker = WorkerClient(local_queue=queue, capabilities=capabilities, **worker_options(args))
    executors = load_executors(args.executors)
    runnable = chosen(executors, capabilities)
    if not runnable:
        raise UnusableExecutors(
            f"--capabilities {', '.join(capabilities or [])} leave none of module "
            f"{args.executors!r}'s executors ({', '.join(sorted(executors))}) to run"
        )
    for task_type, fn in runnable.items():
        worker.register_task_executor(task_type, fn)
    # Neither waits: the signals' thread must hear a second one while the first stop runs.
    on_stop_signals(lambda: worker.stop(0), lambda: worker.stop(0, now=True))
    worker.start()
    return EXIT_OK


def capability_names(listed: str | None) -> list[str] | None:
    """The names of ``--capabilities``, stripped: in ``math, io`` the space belongs to
    the list, and " io" would match neither the executor nor any task (None: not given)."""
    return [name.strip() for name in listed.split(",")] if listed else None


class _Registrations:
    """Stands in for the worker while a module's ``register(worker)`` runs: it keeps
    what is registered, so that ``--capabilities`` can choose among the executors."""

    def __init__(self) -> None:
        self.executors: dict[str, Executor] = {}

    def register_task_executor(self, task_type: str, fn: Executor) -> None:
        self.executors[task_type] = fn


class UnusableExecutors(ConfigurationError):
    """A worker's executors cannot be loaded, or none is left to run: its processes
    would fail the same way at every restart (exit code ``EXIT_CONFIG``)."""


def load_executors(module_name: str) -> dict[str, Executor]:
    """The executors a module defines: the tasks it declares with ``@task``, and those
    of its ``register(worker)`` or ``EXECUTORS`` dict.

    The module is found as ``python -m`` would find it: from the current
    directory too.

    Raises:
        UnusableExecutors: the module cannot be imported or defines none.
    """
    from omnispindle.registry import declared_tasks

    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UnusableExecutors(f"cannot import executors module {module_name!r}: {exc}") from exc
    executors = {declared.task_type: declared.fn for declared in declared_tasks()}
    executors.update(_listed_executors(module))
    if not executors:
        raise UnusableExecutors(
            f"module {module_name!r} defines no executors: declare them with @omnispindle.task, "
            "or define register(worker) or an EXECUTORS dict"
        )
    return executors


def _listed_executors(module: Any) -> dict[str, Executor]:
    """The executors of a module's ``register(worker)`` or ``EXECUTORS`` dict, if any."""
    if callable(getattr(module, "register", None)):
        registrations = _Registrations()
        module.register(registrations)
        return registrations.executors
    if isinstance(getattr(module, "EXECUTORS", None), dict):
        return dict(module.EXECUTORS)
    return {}


def chosen(executors: dict[str, Executor], capabilities: list[str] | None) -> dict[str, Executor]:
    """The executors of the task types among ``capabilities`` (all when None); the others
    are named in the log, so that none is left out unnoticed."""
    if capabilities is None:
        return executors
    left_out = sorted(set(executors) - set(capabilities))
    if left_out:
        log.info("executors not among --capabilities, not run here: %s", ", ".join(left_out))
    return {task_type: fn for task_type, fn in executors.items() if task_type in capabilities}


def _sweep(args: argparse.Namespace) -> int:
    from omnispindle._maintenance.sweeper import Sweeper, SweeperConfig

    config = SweeperConfig(
        interval=args.interval,
        batch_size=args.batch_size,
        dead_worker_after=args.dead_worker_after,
        retention=None if args.no_prune else args.retention,
        archive_after=args.archive_after,
    )
    queue = queue_of(args, migrate=args.migrate)
    try:
        sweeper = Sweeper(queue.db, config)
        if args.once:
            counts = sweeper.run_once()
            print(
                json.dumps(
                    {
                        "requeued": counts.requeued,
                        "failed": counts.failed,
                        "dead_workers": counts.dead_workers,
                        "reconciled": counts.reconciled,
                        "pruned": counts.pruned,
                        "archived": counts.archived,
                        "dropped": counts.dropped,
                    }
                )
            )
            return EXIT_OK
        stopping = threading.Event()
        on_stop_signals(stopping.set)
        sweeper.run(stopping)
    finally:
        queue.shutdown()
    return EXIT_OK
