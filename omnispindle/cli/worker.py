"""``omnispindle worker`` and ``omnispindle sweep``: processes that run until a signal."""

from __future__ import annotations

import argparse
import importlib
import json
import threading
from collections.abc import Callable
from typing import Any

from omnispindle.cli.args import retention_arguments
from omnispindle.cli.exit_codes import EXIT_OK
from omnispindle.cli.signals import on_stop_signals
from omnispindle.errors import ConfigurationError


def add_commands(commands: Any, command: Callable[..., argparse.ArgumentParser]) -> None:
    """Add ``worker`` and ``sweep`` to the ``omnispindle`` subparsers."""
    worker = command(commands, "worker", "run a worker until SIGTERM or SIGINT", _worker)
    worker.add_argument(
        "--executors",
        required=True,
        metavar="MODULE",
        help="module defining register(worker) or an EXECUTORS dict",
    )
    worker.add_argument(
        "--capabilities",
        default=None,
        help="comma-separated task types and tags (default: all executors)",
    )
    worker.add_argument(
        "--concurrency",
        type=int,
        default=1,
        help="tasks run at once, each in its own thread (default 1)",
    )
    worker.add_argument(
        "--name", default=None, help="name shown in status and errors (default worker-N)"
    )
    worker.add_argument(
        "--poll-interval",
        type=float,
        default=1.0,
        help="most seconds between checks for work without a notification",
    )
    worker.add_argument(
        "--lease-timeout",
        type=float,
        default=30.0,
        help="seconds a claim stays valid without a heartbeat",
    )
    worker.add_argument(
        "--heartbeat-interval",
        type=float,
        default=None,
        help="seconds between heartbeats (default a third of the lease)",
    )
    worker.add_argument(
        "--shutdown-timeout",
        type=float,
        default=30.0,
        help="seconds running tasks get to finish on stop (default 30)",
    )
    worker.add_argument(
        "--sweep-interval",
        type=float,
        default=1.0,
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

    sweep = command(
        commands, "sweep", "run the stale-lease sweeper until SIGTERM or SIGINT", _sweep
    )
    sweep.add_argument("--interval", type=float, default=1.0, help="seconds between passes")
    sweep.add_argument(
        "--batch-size",
        type=int,
        default=500,
        help="most expired leases handled per statement (default 500)",
    )
    sweep.add_argument(
        "--dead-worker-after",
        type=float,
        default=60.0,
        help="seconds without a heartbeat before a worker is declared dead",
    )
    sweep.add_argument("--once", action="store_true", help="one pass, print its counts, exit")
    retention_arguments(sweep)


def _worker(args: argparse.Namespace) -> int:
    from omnispindle.worker import WorkerClient

    capabilities = args.capabilities.split(",") if args.capabilities else None
    worker = WorkerClient(
        dsn=args.dsn,
        capabilities=capabilities,
        concurrency=args.concurrency,
        name=args.name,
        poll_interval=args.poll_interval,
        lease_timeout=args.lease_timeout,
        heartbeat_interval=args.heartbeat_interval,
        shutdown_timeout=args.shutdown_timeout,
        sweep_interval=None if args.no_sweep else args.sweep_interval,
        schedule_interval=None if args.no_periodic else 1.0,
        retention=None if args.no_prune else args.retention,
    )
    load_executors(worker, args.executors)
    on_stop_signals(worker.stop)
    worker.start()
    return EXIT_OK


def load_executors(worker: Any, module_name: str) -> None:
    """Register the executors a module defines: ``register(worker)`` or ``EXECUTORS``.

    Raises:
        ConfigurationError: the module cannot be imported or defines neither.
    """
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"cannot import executors module {module_name!r}: {exc}") from exc
    if callable(getattr(module, "register", None)):
        module.register(worker)
    elif isinstance(getattr(module, "EXECUTORS", None), dict):
        for task_type, fn in module.EXECUTORS.items():
            worker.register_task_executor(task_type, fn)
    else:
        raise ConfigurationError(
            f"module {module_name!r} defines neither register(worker) nor an EXECUTORS dict"
        )


def _sweep(args: argparse.Namespace) -> int:
    from omnispindle._maintenance.sweeper import Sweeper, SweeperConfig
    from omnispindle.task_queue import TaskQueue

    config = SweeperConfig(
        interval=args.interval,
        batch_size=args.batch_size,
        dead_worker_after=args.dead_worker_after,
        retention=None if args.no_prune else args.retention,
    )
    queue = TaskQueue(args.dsn)
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
