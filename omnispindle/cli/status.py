"""``omnispindle status``: the queues and the workers, at a glance."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from omnispindle._db import queries as q
from omnispindle._db.rows import QueueSummaryRow, TypeDemand, WorkerSummaryRow
from omnispindle.cli.args import queue_of
from omnispindle.cli.exit_codes import EXIT_OK
from omnispindle.cli.formatting import format_table, one_line
from omnispindle.cli.unclaimable import unclaimable_warnings


def add_commands(commands: Any, command: Callable[..., argparse.ArgumentParser]) -> None:
    """Add ``status`` to the ``omnispindle`` subparsers."""
    status = command(commands, "status", "show queues and workers", _status)
    status.add_argument("--json", action="store_true", help="print JSON for scripts")


# Sweepers run every second or so: a lease expired this long ago that nothing
# has handed on means that nothing sweeps this database.
UNSWEPT_AFTER = 10.0


def _status(args: argparse.Namespace) -> int:
    queue = queue_of(args, migrate=False)
    try:
        queues = queue.read(q.inspection.queue_summary())
        workers = queue.read(q.inspection.worker_summary())
        paused = queue.read(q.pausing.paused_task_types())
        limited = queue.read(q.type_limits.task_type_limits())
        strategies = queue.read(q.type_limits.task_type_strategies())
        demand = queue.read(q.demand.worker_demand())
        unclaimable = queue.read(q.demand.unclaimable_tasks())
    finally:
        queue.shutdown()
    warnings = liveness_warnings(queues, workers) + unclaimable_warnings(unclaimable, workers)
    if args.json:
        report = {
            "queues": queues,
            "workers": workers,
            "paused": paused,
            "limits": limited,
            "strategies": strategies,
            "demand": demand,
            "unclaimable": unclaimable,
            "warnings": warnings,
        }
        print(json.dumps(report, default=str, indent=2))
    else:
        print(format_table([_shown(row) for row in queues], title="Queues"))
        print()
        print(format_table(workers, title="Workers"))
        if paused:
            print()
            print(format_table(paused, title="Paused task types"))
        if limited:
            print()
            print(format_table(limited, title="Task type limits"))
        if strategies:
            print()
            print(format_table(strategies, title="Task type strategies"))
        print()
        print(demand_line(demand, workers))
        for warning in warnings:
            # A warning names workers, whose names are anyone's text.
            print(f"\nwarning: {one_line(warning)}")
    return EXIT_OK


def _shown(row: QueueSummaryRow) -> dict[str, Any]:
    """A queue's row for the table: the age of its oldest expired lease goes to
    the warnings instead."""
    return {k: v for k, v in row.items() if k != "oldest_expired_lease_seconds"}


def demand_line(demand: list[TypeDemand], workers: list[WorkerSummaryRow]) -> str:
    """The scaling hint in one line: tasks that could run at once now, against what the
    active workers take at once (``omnispindle.workers_needed`` turns it into processes)."""
    wanted = sum(row["demand"] for row in demand)
    taken = sum(w["concurrency"] for w in workers if w["state"] == "active")
    return (
        f"Demand: {wanted} (tasks that could run at once now); active workers take {taken} at once"
    )


def liveness_warnings(queues: list[QueueSummaryRow], workers: list[WorkerSummaryRow]) -> list[str]:
    """What the figures say is wrong with the fleet: lost workers, and expired
    leases that nothing sweeps."""
    warnings = [
        f"worker {w['name']} is lost: no heartbeat for {w['heartbeat_age_seconds']:.0f} s, "
        "longer than its lease"
        for w in workers
        if w["state"] == "lost"
    ]
    ages = [row["oldest_expired_lease_seconds"] or 0.0 for row in queues]
    if ages and max(ages) > UNSWEPT_AFTER:
        expired = sum(row["expired_leases"] for row in queues)
        warnings.append(
            f"nothing is sweeping: {expired} running tasks hold leases that expired up to "
            f"{max(ages):.0f} s ago; start a worker or `omnispindle sweep` to hand them on"
        )
    return warnings
