"""The ``metrics`` command: a Prometheus endpoint for the queue."""

from __future__ import annotations

import argparse
import logging
import os
import threading
from collections.abc import Callable
from typing import Any

from omnispindle._core import defaults
from omnispindle._core.hosts import is_loopback
from omnispindle.cli.args import int_arg, port_arg, positive_seconds_arg, queue_of
from omnispindle.cli.exit_codes import EXIT_OK
from omnispindle.cli.signals import on_stop_signals

DEFAULT_PORT = 9187
# The scrape credential comes from the environment: on a command line, any
# user of the host would read it in ``ps``.
TOKEN_VARIABLE = "OMNISPINDLE_METRICS_TOKEN"

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
        "--addr",
        default=defaults.METRICS_ADDRESS,
        help=f"address to listen on (default {defaults.METRICS_ADDRESS}, this host only; "
        f"elsewhere, set ${TOKEN_VARIABLE} so that scrapes must carry it)",
    )
    metrics.add_argument(
        "--cache-seconds",
        type=positive_seconds_arg,
        default=defaults.METRICS_CACHE_SECONDS,
        help="a read of the tables serves every scrape for this long "
        f"(default {defaults.METRICS_CACHE_SECONDS:g})",
    )
    metrics.add_argument(
        "--max-task-types",
        type=int_arg("--max-task-types", defaults.METRICS_MAX_TASK_TYPES_RANGE),
        default=defaults.METRICS_MAX_TASK_TYPES,
        help="task types with series of their own, the busiest; the rest are summed "
        f'as task_type="(other)" (default {defaults.METRICS_MAX_TASK_TYPES})',
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

    with queue_of(args, migrate=False) as queue:
        print(prometheus.exposition(queue.reads, max_task_types=args.max_task_types), end="")
    return EXIT_OK


def _serve(args: argparse.Namespace) -> int:
    from omnispindle import prometheus

    stopping = threading.Event()
    on_stop_signals(stopping.set)
    token = os.environ.get(TOKEN_VARIABLE) or None
    if token is None and not is_loopback(args.addr):
        log.warning(
            "serving metrics on %s without a token: anyone who can reach it can scrape; set $%s",
            args.addr,
            TOKEN_VARIABLE,
        )
    registry = prometheus.registry()
    # Bound first, so that a busy port fails before anything else has started;
    # listening only once the database is open, so that no scrape gets an empty page.
    endpoint = prometheus.listen(args.port, args.addr, registry, token=token, start=False)
    try:
        with queue_of(args, migrate=False) as queue:
            registry.register(
                prometheus.QueueCollector(
                    queue.reads,
                    cache_seconds=args.cache_seconds,
                    max_task_types=args.max_task_types,
                )
            )
            endpoint.start()
            log.info("serving metrics on http://%s:%d/metrics", args.addr, endpoint.server_port)
            stopping.wait()
    finally:
        endpoint.shutdown()
        endpoint.server_close()
    return EXIT_OK
