"""``omnispindle bench``: run a scenario, with peers from the same run when asked."""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import tempfile
from collections.abc import Callable
from typing import Any

from omnispindle._core import defaults
from omnispindle.cli.args import given_dsn, int_arg, migrate_argument, positive_int_arg
from omnispindle.cli.formatting import format_table
from omnispindle.cli.supervisor import MAX_PROCESSES

SCENARIO_HELP = (
    "enqueue: bulk and single submissions; drain: no-op tasks through worker "
    "processes; scheduling: that drain with limits, aging or fair share, against "
    "strict priority; autoscale: an auto-scaled pool's growth under a backlog and "
    "its shrinking; fairness: fair share and a rate limit over a minute; cpu: "
    "CPU-bound tasks through `worker --processes`; latency: enqueue to start; dag: "
    "dependency overhead; recovery: a killed worker's tasks; soak: a long run with "
    "retention on; steady: tasks fed at a fixed rate (or a share of the drain, or to "
    "a depth) while workers drain them; "
    "dashboard: its pages' times on a million tasks; fleet: idle worker processes "
    "under one supervisor, by count: connections, server CPU and latency"
)
# Options each scenario may take, from the command line's names.
OPTIONS = {
    "tasks": "tasks",
    "runs": "runs",
    "workers": "workers_count",
    "concurrency": "concurrency",
    "processes": "processes",
    "lease_timeout": "lease_timeout",
    "retention": "retention",
    "archive_after": "archive_after",
    "snapshot_seconds": "snapshot_seconds",
    "rate": "rate",
    "depth": "depth",
    "share": "share",
    "seconds": "seconds",
    "pooler_dsn": "pooler_dsn",
    "delayed": "delayed",
}


def add_commands(commands: Any, make_command: Callable[..., argparse.ArgumentParser]) -> None:
    from omnispindle.bench.peers import PEERS
    from omnispindle.bench.runner import SCENARIOS

    # The benchmarks watch and clear their tasks by statements of their own, in
    # the default schema and on a direct connection: no queue options.
    bench = make_command(
        commands,
        "bench",
        "run a benchmark scenario and print its figures",
        _bench,
        with_queue_options=False,
    )
    bench.add_argument("scenario", choices=list(SCENARIOS), help=SCENARIO_HELP)
    bench.add_argument(
        "--tasks",
        type=int,
        help="tasks per run (default: the scenario's own); steady: the drain that --share "
        "takes a share of",
    )
    bench.add_argument("--runs", type=int, help="runs whose median is reported (default 3)")
    bench.add_argument(
        "--workers",
        type=int,
        help="worker processes (drain, scheduling, fairness, soak; default 2)",
    )
    bench.add_argument("--concurrency", type=int, help="concurrency of each worker process")
    bench.add_argument(
        "--processes",
        type=process_counts,
        help="cpu, fleet: comma-separated process counts of the worker, each measured "
        "(default 1,2; fleet 2,100)",
    )
    bench.add_argument(
        "--delayed",
        type=int_arg("count of tasks due later", (0, 10_000_000)),
        help="scheduling: tasks due the next day submitted before each drain, ahead of its "
        "tasks (default 0)",
    )
    bench.add_argument("--lease-timeout", type=float, help="lease of the workers (default 30 s)")
    bench.add_argument("--retention", type=float, help="soak: seconds finished tasks are kept")
    bench.add_argument(
        "--archive-after",
        type=float,
        help="soak: seconds a finished task stays in tasks before the workers move it to "
        "the partitioned history (default: pruned from tasks instead)",
    )
    bench.add_argument(
        "--snapshot-seconds",
        type=float,
        help="soak: hold a REPEATABLE READ snapshot this long partway through",
    )
    feeding = bench.add_mutually_exclusive_group()
    feeding.add_argument("--rate", type=float, help="steady: tasks offered a second (default 1000)")
    feeding.add_argument(
        "--depth",
        type=positive_int_arg,
        help="steady: instead of a rate, keep this many tasks waiting to start",
    )
    feeding.add_argument(
        "--share",
        type=float,
        help="steady: instead of a rate, this share of the rate at which the same workers "
        "drain a backlog of the same tasks, measured first (0.5 for half)",
    )
    bench.add_argument(
        "--seconds",
        type=float,
        help="steady: how long to feed (default 60); fleet: how long to idle (default 20)",
    )
    bench.add_argument(
        "--pooler-dsn",
        default=None,
        help="fleet: the workers' pools go through this pooler (PgBouncer in transaction "
        "mode), LISTEN to --dsn",
    )
    bench.add_argument(
        "--peers",
        default="",
        help=f"comma-separated peers to run the same scenario on: {', '.join(PEERS)} "
        "or all (needs omnispindle[bench])",
    )
    bench.add_argument("--json", action="store_true", help="print JSON for scripts")
    migrate_argument(bench)


def process_counts(text: str) -> tuple[int, ...]:
    """Parse ``1,2,4`` for argparse: process counts from 1 to ``MAX_PROCESSES``."""
    one_count = int_arg("process count", (1, MAX_PROCESSES))
    return tuple(one_count(part) for part in text.split(","))


def _bench(args: argparse.Namespace) -> int:
    from omnispindle.bench.peers import PEERS
    from omnispindle.bench.runner import SCENARIOS, check_peers, run
    from omnispindle.task_queue import TaskQueue

    names = PEERS if args.peers == "all" else [p for p in args.peers.split(",") if p]
    for peer in PEERS:  # they narrate every job at INFO; the table is what matters here
        logging.getLogger(peer).setLevel(max(logging.WARNING, logging.getLogger().level))
    peers = check_peers(args.scenario, names)
    accepted = inspect.signature(SCENARIOS[args.scenario]).parameters
    options = {
        OPTIONS[k]: v
        for k, v in vars(args).items()
        if k in OPTIONS and v is not None and OPTIONS[k] in accepted
    }
    with tempfile.TemporaryDirectory(prefix="omnispindle-bench-") as scratch:
        # Without a database, measure on a fresh embedded one.
        given = given_dsn(args)
        queue = (
            TaskQueue(given, migrate=args.migrate, schema=defaults.SCHEMA)
            if given
            else TaskQueue(persistence_path=scratch, schema=defaults.SCHEMA)
        )
        try:
            rows = run(queue, args.scenario, options, peers)
        finally:
            queue.shutdown()
    print(
        json.dumps(rows if peers else rows[0])
        if args.json
        else format_table(aligned(rows), title=f"Benchmark: {args.scenario}")
    )
    return 0 if all(row.get("met", True) for row in rows) else 1


def aligned(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows with every column any of them has, in first-seen order (``-`` where missing)."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    return [{key: _figure(row.get(key)) for key in columns} for row in rows]


def _figure(value: Any) -> Any:
    """Floats with the digits that matter: 6262, 4.83, 0.071."""
    if not isinstance(value, float):
        return value
    return (
        f"{value:.0f}"
        if abs(value) >= 100
        else f"{value:.2f}"
        if abs(value) >= 1
        else f"{value:.3f}"
    )
