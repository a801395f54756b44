"""The ``omnispindle`` command: migrate, worker, status, demo."""

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

from .errors import OmnispindleError

log = logging.getLogger("omnispindle.cli")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code (0 ok, 1 failed, 2 usage)."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=getattr(logging, args.log_level),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.log_level != "DEBUG":
        # Alembic and pgserver narrate every start at INFO; only warnings matter here.
        for chatty in ("alembic", "pgserver"):
            logging.getLogger(chatty).setLevel(logging.WARNING)
    try:
        return args.handler(args)
    except OmnispindleError as exc:
        print(f"omnispindle: {exc}", file=sys.stderr)
        return 1
    except (psycopg.Error, sqlalchemy.exc.DBAPIError) as exc:
        cause = getattr(exc, "orig", None) or exc
        first_line = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        print(f"omnispindle: database error: {first_line}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="omnispindle", description="A task queue inside PostgreSQL.")
    parser.add_argument("--log-level", default="INFO",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    commands = parser.add_subparsers(dest="command", required=True)

    migrate = _command(commands, "migrate", "bring the database schema to the latest version", _migrate)
    migrate.add_argument("--revision", default="head", help="target revision (default head)")

    worker = _command(commands, "worker", "run a worker until SIGTERM or SIGINT", _worker)
    worker.add_argument("--executors", required=True, metavar="MODULE",
                        help="module defining register(worker) or an EXECUTORS dict")
    worker.add_argument("--capabilities", default=None,
                        help="comma-separated task types and tags (default: all executors)")
    worker.add_argument("--concurrency", type=int, default=1)
    worker.add_argument("--name", default=None)
    worker.add_argument("--poll-interval", type=float, default=1.0)
    worker.add_argument("--lease-timeout", type=float, default=30.0,
                        help="seconds a claim stays valid without a heartbeat")
    worker.add_argument("--heartbeat-interval", type=float, default=None,
                        help="seconds between heartbeats (default a third of the lease)")
    worker.add_argument("--shutdown-timeout", type=float, default=30.0)
    worker.add_argument("--sweep-interval", type=float, default=1.0,
                        help="seconds between stale-lease sweeps in this worker")
    worker.add_argument("--no-sweep", action="store_true",
                        help="leave sweeping to a dedicated `omnispindle sweep` process")

    sweep = _command(commands, "sweep", "run the stale-lease sweeper until SIGTERM or SIGINT", _sweep)
    sweep.add_argument("--interval", type=float, default=1.0, help="seconds between passes")
    sweep.add_argument("--batch-size", type=int, default=500)
    sweep.add_argument("--dead-worker-after", type=float, default=60.0,
                       help="seconds without a heartbeat before a worker is declared dead")
    sweep.add_argument("--once", action="store_true", help="one pass, print its counts, exit")

    status = _command(commands, "status", "show queues and workers", _status)
    status.add_argument("--json", action="store_true", help="print JSON for scripts")

    bench = _command(commands, "bench", "run a benchmark scenario and print its figures", _bench)
    bench.add_argument("scenario", choices=["recovery", "dag"])
    bench.add_argument("--tasks", type=int, default=None,
                       help="tasks per run (default: the scenario's, 100 for recovery, 5000 for dag)")
    bench.add_argument("--lease-timeout", type=float, default=30.0)
    bench.add_argument("--json", action="store_true", help="print JSON for scripts")

    _command(commands, "demo", "run the demo on an embedded Postgres", _demo, with_dsn=False)
    return parser


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
                          sweep_interval=None if args.no_sweep else args.sweep_interval)
    load_executors(worker, args.executors)
    _on_stop_signals(worker.stop)
    worker.start()
    return 0


def _sweep(args: argparse.Namespace) -> int:
    import threading

    from .sweeper import Sweeper, SweeperConfig
    from .task_queue import TaskQueue

    config = SweeperConfig(interval=args.interval, batch_size=args.batch_size,
                           dead_worker_after=args.dead_worker_after)
    queue = TaskQueue(args.dsn)
    try:
        sweeper = Sweeper(queue.db, config)
        if args.once:
            counts = sweeper.run_once()
            print(json.dumps({"requeued": counts.requeued, "failed": counts.failed,
                              "dead_workers": counts.dead_workers,
                              "reconciled": counts.reconciled}))
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


def _bench(args: argparse.Namespace) -> int:
    import tempfile

    from .bench import SCENARIOS
    from .task_queue import TaskQueue

    with tempfile.TemporaryDirectory(prefix="omnispindle-bench-") as scratch:
        # Without a database, measure on a fresh embedded one.
        given = args.dsn or os.environ.get("OMNISPINDLE_DSN")
        queue = TaskQueue(given) if given else TaskQueue(persistence_path=scratch)
        try:
            options = {"lease_timeout": args.lease_timeout}
            if args.tasks is not None:
                options["tasks"] = args.tasks
            figures = SCENARIOS[args.scenario](queue, **options)
        finally:
            queue.shutdown()
    print(json.dumps(figures) if args.json else format_table([figures], title="Benchmark"))
    return 0 if figures["met"] else 1


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo()


def format_table(rows: list[dict[str, Any]], title: str) -> str:
    """Render rows as a plain aligned text table under a title."""
    if not rows:
        return f"{title}: none"
    headers = list(rows[0])
    cells = [[_cell(row[h]) for h in headers] for row in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
    lines = [title, "  ".join(h.ljust(w) for h, w in zip(headers, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}"
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value)
