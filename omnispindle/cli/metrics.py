"""The ``metrics`` command: a Prometheus endpoint for the queue."""

from __future__ import annotations

import argparse
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

from omnispindle.cli.args import port_arg
from omnispindle.cli.exit_codes import EXIT_OK
from omnispindle.cli.signals import on_stop_signals

DEFAULT_PORT = 9187

log = logging.getLogger("omnispindle.cli")


def add_commands(commands: Any, command: Callable[..., argparse.ArgumentParser]) -> None:
    """Add ``metrics`` to the ``omnispindle`` subparsers, through cli's ``command`` factory."""
    metrics = command(
        commands, "metrics", "serve Prometheus metrics until SIGTERM or SIGINT", _metrics
    )
    metrics.add_argument(
        "--port",
        type=port_arg,
        default=DEFAULT_PORT,
        help=f"port to listen on (default {DEFAULT_PORT})",
    )
    metrics.add_argument(
        "--addr", default="0.0.0.0", help="address to listen on (default 0.0.0.0, every interface)"
    )
    metrics.add_argument(
        "--once",
        action="store_true",
        help="print the metrics in the Prometheus text format and exit",
    )


def _metrics(args: argparse.Namespace) -> int:
    from omnispindle import prometheus

    prometheus.client()  # without prometheus-client, say so before connecting
    return _print_once(args) if args.once else _serve(args)


def _print_once(args: argparse.Namespace) -> int:
    from omnispindle import prometheus
    from omnispindle.task_queue import TaskQueue

    with TaskQueue(args.dsn, migrate=False) as queue:
        print(prometheus.exposition(queue.db), end="")
    return EXIT_OK


def _serve(args: argparse.Namespace) -> int:
    from omnispindle import prometheus
    from omnispindle.task_queue import TaskQueue

    stopping = threading.Event()
    on_stop_signals(stopping.set)
    # Bind first, so that a busy port fails before anything else has started.
    collector = _AfterConnecting()
    registry = prometheus.registry()
    registry.register(collector)
    server = prometheus.listen(args.port, args.addr, registry)
    try:
        with TaskQueue(args.dsn, migrate=False) as queue:
            collector.connected(prometheus.QueueCollector(queue.db))
            log.info("serving metrics on http://%s:%d/metrics", args.addr, server.server_port)
            stopping.wait()
    finally:
        server.shutdown()
        server.server_close()
    return EXIT_OK


class _AfterConnecting:
    """Holds a scrape that comes while the database is still being opened."""

    def __init__(self) -> None:
        self._ready = threading.Event()
        self._collector: Any = None

    def connected(self, collector: Any) -> None:
        self._collector = collector
        self._ready.set()

    def describe(self) -> Iterator[Any]:
        return iter(())

    def collect(self) -> Iterator[Any]:
        self._ready.wait()
        result: Iterator[Any] = self._collector.collect()
        return result
