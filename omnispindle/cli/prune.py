"""The ``prune`` command: delete finished tasks past a retention horizon."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from omnispindle._maintenance import retention
from omnispindle.cli.args import horizon_arg, int_arg, queue_of
from omnispindle.cli.exit_codes import EXIT_OK
from omnispindle.cli.formatting import to_json


def add_commands(commands: Any, command: Callable[..., argparse.ArgumentParser]) -> None:
    """Add ``prune`` to the ``omnispindle`` subparsers, through cli's ``command`` factory."""
    days = retention.DEFAULT_RETENTION / 86400
    prune = command(
        commands, "prune", "delete finished tasks older than a horizon, in batches", _prune
    )
    prune.add_argument(
        "--older-than",
        type=horizon_arg,
        default=retention.DEFAULT_RETENTION,
        metavar="SECONDS",
        help=f"delete tasks finished longer ago than this: seconds, or an age "
        f"such as 12h or 7d (default {days:g}d, as workers keep them)",
    )
    prune.add_argument(
        "--batch-size",
        type=int_arg("batch size", (1, retention.MAX_BATCH_SIZE)),
        default=retention.DEFAULT_BATCH_SIZE,
        metavar="N",
        help=f"tasks deleted per transaction (default {retention.DEFAULT_BATCH_SIZE})",
    )
    prune.add_argument(
        "--dry-run", action="store_true", help="only count the tasks that would be deleted"
    )
    prune.add_argument("--json", action="store_true", help="print JSON for scripts")


def _prune(args: argparse.Namespace) -> int:
    with queue_of(args, migrate=False) as queue:
        if args.dry_run:
            count = retention.count_prunable(queue.db, args.older_than)
        else:
            count = retention.prune(queue.db, args.older_than, args.batch_size)
    if args.json:
        key = "prunable" if args.dry_run else "pruned"
        print(to_json({key: count, "older_than": args.older_than, "dry_run": args.dry_run}))
    else:
        verb = "would prune" if args.dry_run else "pruned"
        print(
            f"{verb} {count} finished task{'' if count == 1 else 's'} "
            f"older than {args.older_than:g} s"
        )
    return EXIT_OK
