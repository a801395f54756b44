"""``omnispindle limit TYPE``: cap a task type's running tasks and starts per
second across every worker, or clear its limits; ``omnispindle strategy TYPE``:
choose how workers order its ready tasks."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any

from omnispindle._client import operations
from omnispindle._client.operations import LIMIT_RANGE, RATE_RANGE
from omnispindle.cli.args import int_arg, positive_seconds_arg
from omnispindle.cli.complain import complain
from omnispindle.cli.exit_codes import EXIT_OK, EXIT_USAGE
from omnispindle.cli.formatting import to_json
from omnispindle.cli.tasks import open_queue
from omnispindle.errors import ValidationError


def add_commands(commands: Any, command: Callable[..., argparse.ArgumentParser]) -> None:
    """Add ``limit`` and ``strategy`` to the ``omnispindle`` subparsers."""
    limit = command(
        commands, "limit", "cap a task type's running tasks and starts per second", _limit
    )
    limit.add_argument("task_type", metavar="TYPE", help="the task type to limit")
    limit.add_argument(
        "--max-running",
        type=int_arg("max running", LIMIT_RANGE),
        default=None,
        metavar="N",
        help="at most N of its tasks running at once, across every worker",
    )
    limit.add_argument(
        "--max-running-per-group",
        type=int_arg("max running per group", LIMIT_RANGE),
        default=None,
        metavar="N",
        help="at most N of its tasks running at once in each group (--group-key); "
        "needs the fair strategy",
    )
    limit.add_argument(
        "--starts-per-second-per-group",
        type=_rate,
        default=None,
        metavar="R",
        help="at most R of its tasks started per second in each group; needs the fair strategy",
    )
    limit.add_argument(
        "--starts-per-second",
        type=_rate,
        default=None,
        metavar="R",
        help="at most R of its tasks started per second, across every worker",
    )
    limit.add_argument(
        "--burst",
        type=int_arg("burst", LIMIT_RANGE),
        default=None,
        metavar="B",
        help="starts allowed at once after a quiet spell (default: one second's worth)",
    )
    limit.add_argument(
        "--clear", action="store_true", help="remove the type's limits instead of setting them"
    )
    limit.add_argument("--json", action="store_true", help="print JSON for scripts")
    strategy = command(
        commands, "strategy", "choose how workers order a task type's ready tasks", _strategy
    )
    strategy.add_argument("task_type", metavar="TYPE", help="the task type")
    strategy.add_argument(
        "strategy",
        choices=operations.STRATEGIES,
        help="priority: strict priority, then age (the default); aging: a task's priority "
        "grows by one every --aging-seconds it waits; fair: an even share for each group "
        "(submit --group-key)",
    )
    strategy.add_argument(
        "--aging-seconds",
        type=positive_seconds_arg,
        default=None,
        metavar="S",
        help="with aging: the wait that raises a task's effective priority by one",
    )
    strategy.add_argument("--json", action="store_true", help="print JSON for scripts")


def _rate(text: str) -> float:
    """A rate per second, as task_type_limits accepts it."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and RATE_RANGE[0] <= value <= RATE_RANGE[1]):
        raise argparse.ArgumentTypeError(
            f"invalid rate {text!r}: a number from 1e-9 to {RATE_RANGE[1]:,.0f}"
        )
    return value


def _limit(args: argparse.Namespace) -> int:
    given = [
        args.max_running,
        args.starts_per_second,
        args.burst,
        args.max_running_per_group,
        args.starts_per_second_per_group,
    ]
    if args.clear and any(value is not None for value in given):
        return _usage_error("--clear takes no limit: give either --clear or the limits")
    try:
        if args.clear:
            change: Any = operations.clear_task_type_limit(args.task_type)
        else:
            change = operations.set_task_type_limit(args.task_type, *given)
    except ValidationError as exc:  # a bad TYPE or limit is a bad argument
        return _usage_error(str(exc))
    with open_queue(args) as queue:
        try:
            changed = queue.db.run(change)
        except ValidationError as exc:  # refused by the database: a limit per group
            return _usage_error(str(exc))  # without the fair strategy
    message = _message(args, changed)
    if args.json:
        print(to_json({"task_type": args.task_type, "message": message}))
    else:
        print(message)
    return EXIT_OK


def _strategy(args: argparse.Namespace) -> int:
    try:
        change = operations.set_task_type_strategy(
            args.task_type, args.strategy, args.aging_seconds
        )
    except ValidationError as exc:  # a bad TYPE, or --aging-seconds without aging
        return _usage_error(str(exc))
    with open_queue(args) as queue:
        try:
            queue.db.run(change)
        except ValidationError as exc:  # refused by the database: leaving fair share
            return _usage_error(str(exc))  # under a limit per group
    message = f"task type {args.task_type} ordered by {args.strategy}"
    if args.strategy == "fair":
        message += " share between its groups"
    if args.aging_seconds is not None:
        message += f" (+1 priority every {args.aging_seconds:g} s of waiting)"
    if args.json:
        print(to_json({"task_type": args.task_type, "message": message}))
    else:
        print(message)
    return EXIT_OK


def _message(args: argparse.Namespace, changed: bool | None) -> str:
    if args.clear:
        return f"task type {args.task_type} " + ("limits cleared" if changed else "had no limits")
    parts = []
    if args.max_running is not None:
        parts.append(f"at most {args.max_running} running")
    if args.max_running_per_group is not None:
        parts.append(f"at most {args.max_running_per_group} running per group")
    if args.starts_per_second_per_group is not None:
        parts.append(f"at most {args.starts_per_second_per_group:g} starts/s per group")
    if args.starts_per_second is not None:
        parts.append(f"at most {args.starts_per_second:g} starts/s")
    return f"task type {args.task_type} limited: " + ", ".join(parts)


def _usage_error(message: str) -> int:
    complain(f"omnispindle: {message}")
    return EXIT_USAGE
