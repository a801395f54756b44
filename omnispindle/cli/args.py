"""Argument types of the ``omnispindle`` command: each parses one value or explains why not;
and the DSN a command was given."""

from __future__ import annotations

import argparse
import math
import os
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from omnispindle._core import defaults
from omnispindle._db.embedded import DSN_VARIABLE
from omnispindle._db.namespace import Namespace

if TYPE_CHECKING:
    from omnispindle.task_queue import TaskQueue
from omnispindle._maintenance import retention

N = TypeVar("N", int, float)

MAX_TASK_ID = 2**63 - 1  # ids are bigint
MAX_AGE_SECONDS = 100 * 365 * 86400  # no task is older; far larger ages overflow timestamps
_AGE = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def task_id_arg(text: str) -> int:
    """Parse a task id for argparse: a positive whole number."""
    value = _parsed(text, int, 0)
    if not 0 < value <= MAX_TASK_ID:
        raise argparse.ArgumentTypeError(f"invalid task id {text!r}: a positive whole number")
    return value


def int_arg(what: str, bounds: tuple[int, int]) -> Callable[[str], int]:
    """An argparse type for a whole number within ``bounds``, named ``what`` in its error."""
    low, high = bounds

    def parse(text: str) -> int:
        value = _parsed(text, int, low - 1)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(
                f"invalid {what} {text!r}: a whole number from {low} to {high}"
            )
        return value

    parse.__name__ = what.replace(" ", "_")  # argparse names the type in some messages
    return parse


def positive_int_arg(text: str) -> int:
    """Parse a count greater than zero for argparse."""
    value = _parsed(text, int, 0)
    if not 0 < value < MAX_TASK_ID:  # a list fetches one row more than its limit
        raise argparse.ArgumentTypeError(f"invalid count {text!r}: a whole number above 0")
    return value


def _parsed(text: str, kind: Callable[[str], N], otherwise: N) -> N:
    """``kind(text)``, or ``otherwise`` (a value its caller refuses) for text that is none."""
    try:
        return kind(text)
    except ValueError:
        return otherwise


def positive_seconds_arg(text: str) -> float:
    """Parse a number of seconds greater than zero for argparse; far more than
    ``MAX_SECONDS`` overflow the waits they end up in."""
    value = _parsed(text, float, math.nan)
    if not (math.isfinite(value) and 0 < value <= defaults.MAX_SECONDS):
        raise argparse.ArgumentTypeError(
            f"invalid seconds {text!r}: a number above 0, at most {defaults.MAX_SECONDS:g} "
            "(about 31 years)"
        )
    return value


def age_arg(text: str) -> float:
    """Parse an age such as ``30s``, ``10m``, ``2h`` or ``1d`` into seconds."""
    seconds = _age_seconds(text)
    if not seconds <= MAX_AGE_SECONDS:
        raise argparse.ArgumentTypeError(
            f"invalid age {text!r}: a number and a unit s, m, h or d, e.g. 30s, 10m, 2h, 1d "
            f"(at most {MAX_AGE_SECONDS // 86400}d)"
        )
    return seconds


def _age_seconds(text: str) -> float:
    """The seconds of an age such as ``30s`` or ``2h``; NaN for text that is none."""
    match = _AGE.fullmatch(text.strip())
    return float(match[1]) * _UNIT_SECONDS[match[2]] if match else math.nan


def horizon_arg(text: str) -> float:
    """Parse a retention horizon for argparse: seconds (``3600``) or an age (``12h``, ``7d``)."""
    seconds = _parsed(text, float, math.nan)
    if math.isnan(seconds):
        seconds = _age_seconds(text)
    if not (math.isfinite(seconds) and 0 < seconds <= retention.MAX_RETENTION):
        raise argparse.ArgumentTypeError(
            f"invalid horizon {text!r}: seconds above 0, or an age such as 30m, 12h or 7d "
            f"(at most {retention.MAX_RETENTION / 86400:.0f}d)"
        )
    return seconds


def port_arg(text: str) -> int:
    """A TCP port number, 0 to 65535 (0: any free port)."""
    port = _parsed(text, int, -1)
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r} (0 to 65535)")
    return port


def migrate_argument(parser: argparse.ArgumentParser) -> None:
    """``--migrate`` / ``--no-migrate``, for the commands that run the queue."""
    parser.add_argument(
        "--migrate",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="bring the schema to the latest version first, as `omnispindle migrate` does "
        "(default: only the embedded database; a --dsn database must be current)",
    )


def retention_arguments(parser: argparse.ArgumentParser) -> None:
    """``--retention``, ``--no-prune`` and ``--archive-after``, for the commands
    that run a sweeper."""
    keep = parser.add_mutually_exclusive_group()
    keep.add_argument(
        "--retention",
        type=horizon_arg,
        default=retention.DEFAULT_RETENTION,
        metavar="SECONDS",
        help="seconds (or an age such as 12h, 7d) finished tasks are kept before "
        f"the sweeper deletes them (default {retention.DEFAULT_RETENTION / 86400:g}d)",
    )
    keep.add_argument("--no-prune", action="store_true", help="keep finished tasks forever")
    parser.add_argument(
        "--archive-after",
        type=horizon_arg,
        metavar="SECONDS",
        help="seconds (or an age) a finished task stays in the tasks table before the "
        "sweeper moves it to the partitioned history, whose partitions --retention "
        "drops whole (default: never moved; the retention deletes them from tasks)",
    )


def given_dsn(args: argparse.Namespace) -> str | None:
    """``--dsn``, else ``$OMNISPINDLE_DSN``; None when neither is set."""
    dsn: str | None = args.dsn or os.environ.get(DSN_VARIABLE)
    return dsn


def given_schema(args: argparse.Namespace) -> str:
    """``--schema``, else ``$OMNISPINDLE_SCHEMA``, else ``omnispindle``.

    Raises:
        ValidationError: the name is not one a queue may use.
    """
    return Namespace.chosen(args.schema).name


def queue_arguments(parser: argparse.ArgumentParser) -> None:
    """``--schema``, ``--pooler``, ``--listen-dsn`` and ``--read-dsn``: where the queue
    is, and how to reach it."""
    parser.add_argument(
        "--schema",
        default=None,
        help="the queue's schema, each a queue of its own "
        "(default $OMNISPINDLE_SCHEMA, else omnispindle)",
    )
    parser.add_argument(
        "--pooler",
        action="store_true",
        help="--dsn leads to a pooler in transaction mode (PgBouncer): prepare no statement; "
        "LISTEN only on --listen-dsn",
    )
    parser.add_argument(
        "--listen-dsn",
        default=None,
        help="a direct connection for LISTEN, with --pooler (without one, poll only)",
    )
    parser.add_argument(
        "--read-dsn",
        default=None,
        help="a streaming replica for what only reads: task records, lists, status, "
        "metrics and waits' checks",
    )


def queue_of(args: argparse.Namespace, *, migrate: bool | None) -> TaskQueue:
    """The TaskQueue a command's options describe.

    Raises:
        ValidationError: ``--schema`` is not a name a queue may use.
    """
    from omnispindle.task_queue import TaskQueue  # on use: the command line starts fast

    return TaskQueue(
        args.dsn,
        migrate=migrate,
        schema=given_schema(args),
        pooler=args.pooler,
        listen_dsn=args.listen_dsn,
        read_dsn=args.read_dsn,
    )
