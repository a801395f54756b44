"""The options of a task on the command line (``submit``, ``schedules add``): the
arguments, and the keyword arguments of ``submit_task`` they stand for."""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

from omnispindle._core import defaults
from omnispindle.cli.args import int_arg, positive_seconds_arg


def add_task_options(parser: argparse.ArgumentParser) -> None:
    """The task type's parameters and how its attempts run."""
    parser.add_argument(
        "--params",
        type=json_object_arg,
        default={},
        metavar="JSON",
        help="the parameters, a JSON object ('-' reads it from stdin)",
    )
    parser.add_argument(
        "--priority",
        type=int_arg("priority", defaults.PRIORITY_RANGE),
        default=defaults.PRIORITY,
        help="higher runs first",
    )
    parser.add_argument(
        "--max-retries",
        type=int_arg("max retries", defaults.MAX_RETRIES_RANGE),
        default=defaults.MAX_RETRIES,
        help="further attempts after a failed one",
    )
    parser.add_argument(
        "--task-timeout",
        type=positive_seconds_arg,
        default=None,
        metavar="SECONDS",
        help="seconds one attempt may run (default: no limit)",
    )
    parser.add_argument(
        "--retry-backoff",
        type=backoff_arg,
        default=defaults.RETRY_BACKOFF,
        metavar="SECONDS",
        help="base of the exponential backoff between attempts",
    )
    parser.add_argument(
        "--capability",
        action="append",
        default=None,
        metavar="NAME",
        help="a capability a worker must declare to run it (repeatable)",
    )


def task_options(args: argparse.Namespace) -> dict[str, Any]:
    """``submit_task``'s keyword arguments from the parsed options."""
    return {
        "priority": args.priority,
        "max_retries": args.max_retries,
        "timeout": args.task_timeout,
        "retry_backoff": args.retry_backoff,
        "required_capabilities": args.capability,
    }


def json_object_arg(text: str) -> dict[str, Any]:
    """Parse a JSON object for argparse; ``-`` reads it from stdin."""
    source = sys.stdin.read() if text == "-" else text
    try:
        value = json.loads(source)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"invalid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(
            f"the parameters must be a JSON object, got {type(value).__name__}"
        )
    return value


def backoff_arg(text: str) -> float:
    """Seconds of backoff: a number from 0 to an hour."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 <= value <= defaults.MAX_RETRY_BACKOFF:
        raise argparse.ArgumentTypeError(
            f"invalid seconds {text!r}: a number from 0 to {defaults.MAX_RETRY_BACKOFF:g}"
        )
    return value
