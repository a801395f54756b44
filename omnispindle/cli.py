"""The ``omnispindle`` command: migrate, worker, sweep, status, bench, demo, and the
commands for people in :mod:`omnispindle.cli_tasks`."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import signal
import sys
from typing import Any, Sequence

import psycopg
import sqlalchemy.exc

from . import cli_tasks
from .errors import OmnispindleError, TaskNotFoundError, WaitTimeoutError, first_line
from .exit_codes import (EPILOG, EXIT_ERROR, EXIT_INTERRUPTED, EXIT_TIMEOUT, EXIT_UNKNOWN_TASK,
                         EXIT_USAGE)
from .formatting import format_table

__all__ = ["main", "load_executors", "format_table"]

log = logging.getLogger("omnispindle.cli")


# The first matching class decides; typed errors not listed here mean a refusal.
_EXIT_CODES: tuple[tuple[type[OmnispindleError], int], ...] = (
    (TaskNotFoundError, EXIT_UNKNOWN_TASK),
    (WaitTimeoutError, EXIT_TIMEOUT),
    (OmnispindleError, EXIT_ERROR),
)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code (see ``omnispindle.exit_codes``)."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error already reported in one line
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    logging.basicConfig(level=getattr(logging, args.log_level),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.log_level != "DEBUG":
        # Alembic and pgserver narrate every start at INFO; only warnings matter here.
        for chatty in ("alembic", "pgserver"):
            logging.getLogger(chatty).setLevel(logging.WARNING)
    try:
        return args.handler(args)
    except OmnispindleError as exc:
        print(f"omnispindle: {first_line(exc)}", file=sys.stderr)
        return next(code for kind, code in _EXIT_CODES if isinstance(exc, kind))
    except (psycopg.Error, sqlalchemy.exc.DBAPIError) as exc:
        cause = getattr(exc, "orig", None) or exc
        print(f"omnispindle: database error: {first_line(cause)}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("\nomnispindle: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


class _Parser(argparse.ArgumentParser):
    """Reports a usage error in one line, ``omnispindle: ...``, and exits with code 2."""

    def error(self, message: str) -> Any:
        self.exit(EXIT_USAGE, f"omnispindle: {message} (see `{self.prog} --help`)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="omnispindle", description="A task queue inside PostgreSQL.",
                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--log-level", default="INFO",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="how much to log (default INFO)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    migrate = _command(commands, "migrate", "bring the database schema to the latest version", _migrate)
    migrate.add_argument("--revision", default="head", help="target revision (default head)")

    worker = _command(commands, "worker", "run a worker until SIGTERM or SIGINT", _worker)
    worker.add_argument("--executors", required=True, metavar="MODULE",
                        help="module defining register(worker) or an EXECUTORS dict")
    worker.add_argument("--capabilities", default=None,
                        help="comma-separated task types and tags (default: all executors)")
    worker.add_argument("--concurrency", type=int, default=1,
                        help="tasks run at once, each in its own thread (default 1)")
    worker.add_argument("--name", default=None,
                        help="name shown in status and errors (default worker-N)")
    worker.add_argument("--poll-interval", type=float, default=1.0,
                        help="most seconds between checks for work without a notification")
    worker.add_argument("--lease-timeout", type=float, default=30.0,
                        help="seconds a claim stays valid without a heartbeat")
    worker.add_argument("--heartbeat-interval", type=float, default=None,
                        help="seconds between heartbeats (default a third of the lease)")
    worker.add_argument("--shutdown-timeout", type=float, default=30.0,
                        help="seconds running tasks get to finish on stop (default 30)")
    worker.add_argument("--sweep-interval", type=float, default=1.0,
                        help="seconds between stale-lease sweeps in this worker")
    worker.add_argument("--no-sweep", action="store_true",
                        help="leave sweeping to a dedicated `omnispindle sweep` process")
    worker.add_argument("--no-periodic", action="store_true",
                        help="leave enqueuing periodic tasks to other workers")
    _retention_arguments(worker)

    sweep = _command(commands, "sweep", "run the stale-lease sweeper until SIGTERM or SIGINT", _sweep)
    sweep.add_argument("--interval", type=float, default=1.0, help="seconds between passes")
    sweep.add_argument("--batch-size", type=int, default=500,
                       help="most expired leases handled per statement (default 500)")
    sweep.add_argument("--dead-worker-after", type=float, default=60.0,
                       help="seconds without a heartbeat before a worker is declared dead")
    sweep.add_argument("--once", action="store_true", help="one pass, print its counts, exit")
    _retention_arguments(sweep)

    status = _command(commands, "status", "show queues and workers", _status)
    status.add_argument("--json", action="store_true", help="print JSON for scripts")
    from .cli_metrics import add_command as add_metrics_command
    from .cli_prune import add_command as add_prune_command
    add_metrics_command(commands, _command)
    add_prune_command(commands, _command)

    from .cli_bench import add_command as add_bench_command
    add_bench_command(commands, _command)

    _command(commands, "demo", "run the demo on an embedded Postgres", _demo, with_dsn=False)
    cli_tasks.add_commands(commands, _command)
    return parser


def _retention_arguments(parser: argparse.ArgumentParser) -> None:
    from .cli_prune import horizon_arg
    from .retention import DEFAULT_RETENTION

    keep = parser.add_mutually_exclusive_group()
    keep.add_argument("--retention", type=horizon_arg, default=DEFAULT_RETENTION,
                      metavar="SECONDS",
                      help="seconds (or an age such as 12h, 7d) finished tasks are kept before "
                           f"the sweeper deletes them (default {DEFAULT_RETENTION / 86400:g}d)")
    keep.add_argument("--no-prune", action="store_true",
                      help="keep finished tasks forever")


def _command(commands: Any, name: str, help_text: str, handler: Any,
             with_dsn: bool = True) -> argparse.ArgumentParser:
    sub = commands.add_parser(name, help=help_text, description=help_text)
    if with_dsn:
        sub.add_argument("--dsn", default=None,
                         help="Postgres DSN (default $OMNISPINDLE_DSN, else the embedded server)")
    sub.set_defaults(handler=handler)
    return sub


def _migrate(args: argparse.Namespace) -> int:
    from .embedded import DSN_VARIABLE, start_server
    from .migrate import upgrade

    dsn = args.dsn or os.environ.get(DSN_VARIABLE)
    server = None if dsn else start_server()
    try:
        upgrade(dsn or server.get_uri(), args.revision)
    finally:
        if server is not None:
            server.cleanup()
    print(f"omnispindle: schema at {args.revision}")
    return 0


def _worker(args: argparse.Namespace) -> int:
    from .worker import WorkerClient

    capabilities = args.capabilities.split(",") if args.capabilities else None
    worker = WorkerClient(dsn=args.dsn, capabilities=capabilities, concurrency=args.concurrency,
                          name=args.name, poll_interval=args.poll_interval,
                          lease_timeout=args.lease_timeout,
                          heartbeat_interval=args.heartbeat_interval,
                          shutdown_timeout=args.shutdown_timeout,
                          sweep_interval=None if args.no_sweep else args.sweep_interval,
                          schedule_interval=None if args.no_periodic else 1.0,
                          retention=None if args.no_prune else args.retention)
    load_executors(worker, args.executors)
    _on_stop_signals(worker.stop)
    worker.start()
    return 0


def _sweep(args: argparse.Namespace) -> int:
    import threading

    from .sweeper import Sweeper, SweeperConfig
    from .task_queue import TaskQueue

    config = SweeperConfig(interval=args.interval, batch_size=args.batch_size,
                           dead_worker_after=args.dead_worker_after,
                           retention=None if args.no_prune else args.retention)
    queue = TaskQueue(args.dsn)
    try:
        sweeper = Sweeper(queue.db, config)
        if args.once:
            counts = sweeper.run_once()
            print(json.dumps({"requeued": counts.requeued, "failed": counts.failed,
                              "dead_workers": counts.dead_workers,
                              "reconciled": counts.reconciled, "pruned": counts.pruned}))
            return 0
        stopping = threading.Event()
        _on_stop_signals(stopping.set)
        sweeper.run(stopping)
    finally:
        queue.shutdown()
    return 0


def _on_stop_signals(stop: Any) -> None:
    """Call ``stop()`` on SIGTERM and SIGINT (the handler only asks; the loop exits)."""

    def request_stop(signum: int, _frame: Any) -> None:
        log.info("received %s; stopping", signal.Signals(signum).name)
        stop()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)


def load_executors(worker: Any, module_name: str) -> None:
    """Register the executors a module defines: ``register(worker)`` or ``EXECUTORS``.

    Raises:
        ConfigurationError: the module cannot be imported or defines neither.
    """
    from .errors import ConfigurationError

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
            f"module {module_name!r} defines neither register(worker) nor an EXECUTORS dict")


def _status(args: argparse.Namespace) -> int:
    from .task_queue import TaskQueue

    queue = TaskQueue(args.dsn)
    try:
        queues = queue.db.fetch("queue_summary")
        workers = queue.db.fetch("worker_summary")
    finally:
        queue.shutdown()
    if args.json:
        print(json.dumps({"queues": queues, "workers": workers}, default=str, indent=2))
    else:
        print(format_table(queues, title="Queues"))
        print()
        print(format_table(workers, title="Workers"))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo()
