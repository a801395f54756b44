"""``omnispindle schedules list|add|remove``: periodic schedules from the shell."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from omnispindle.cli.complain import complain
from omnispindle.cli.exit_codes import EXIT_ERROR, EXIT_OK, EXIT_USAGE
from omnispindle.cli.formatting import format_table, to_json
from omnispindle.cli.task_options import add_task_options, task_options
from omnispindle.cli.tasks import open_queue
from omnispindle.errors import CronExpressionError

COLUMNS = ("name", "cron", "timezone", "task_type", "enabled", "next_tick_at", "last_task_id")


def add_commands(commands: Any, command: Callable[..., argparse.ArgumentParser]) -> None:
    """Add ``schedules`` and its actions to the ``omnispindle`` subparsers."""
    schedules = command(
        commands, "schedules", "list, add and remove periodic schedules", _list, with_dsn=False
    )
    actions = schedules.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = command(actions, "list", "every schedule, with its last and next tick", _list)
    listing.add_argument("--json", action="store_true", help="print JSON for scripts")
    add = command(actions, "add", "create or replace a schedule", _add)
    add.add_argument("name", help="the schedule's name; an existing one is replaced")
    add.add_argument("cron", help="a cron expression, e.g. '0 9 * * mon-fri' or @daily")
    add.add_argument("task_type", metavar="TYPE", help="the task type submitted at every tick")
    add.add_argument(
        "--tz", default="UTC", metavar="ZONE", help="the time zone of the cron fields (IANA)"
    )
    add.add_argument("--disabled", action="store_true", help="save it paused")
    add_task_options(add)
    add.add_argument("--json", action="store_true", help="print JSON for scripts")
    remove = command(actions, "remove", "delete a schedule (its enqueued tasks stay)", _remove)
    remove.add_argument("name", help="the schedule to delete")


def _list(args: argparse.Namespace) -> int:
    from omnispindle.client import TaskQueueClient

    with open_queue(args) as queue:
        schedules = TaskQueueClient(local_queue=queue).list_periodic_tasks()
    print(to_json(schedules) if args.json else schedule_table(schedules))
    return EXIT_OK


def schedule_table(schedules: Sequence[Mapping[str, Any]]) -> str:
    """The schedules as a table for people."""
    return format_table([{c: row[c] for c in COLUMNS} for row in schedules], title="Schedules")


def _add(args: argparse.Namespace) -> int:
    from omnispindle.client import TaskQueueClient

    with open_queue(args) as queue:
        client = TaskQueueClient(local_queue=queue)
        try:
            client.add_periodic_task(
                args.name,
                args.cron,
                args.task_type,
                args.params,
                enabled=not args.disabled,
                tz=args.tz,
                **task_options(args),
            )
        except CronExpressionError as exc:  # a bad --tz or cron is a bad argument
            complain(f"omnispindle: {exc}")
            return EXIT_USAGE
        [saved] = [s for s in client.list_periodic_tasks() if s["name"] == args.name]
    if args.json:
        print(to_json(saved))
    else:
        when = saved["next_tick_at"] or "never (disabled)"
        print(f"schedule {args.name} saved: {args.cron} in {args.tz}; next tick {when}")
    return EXIT_OK


def _remove(args: argparse.Namespace) -> int:
    from omnispindle.client import TaskQueueClient

    with open_queue(args) as queue:
        removed = TaskQueueClient(local_queue=queue).remove_periodic_task(args.name)
    if not removed:
        complain(f"omnispindle: no schedule named {args.name!r}")
        return EXIT_ERROR
    print(f"schedule {args.name} removed")
    return EXIT_OK
