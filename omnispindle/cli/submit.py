"""``omnispindle submit``: one task from the shell, and its result if asked to wait."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from omnispindle.cli.args import age_arg, positive_seconds_arg, task_id_arg
from omnispindle.cli.exit_codes import EXIT_OK
from omnispindle.cli.formatting import to_json
from omnispindle.cli.task_options import add_task_options, task_options
from omnispindle.cli.tasks import open_queue, report_finished


def add_commands(commands: Any, command: Callable[..., argparse.ArgumentParser]) -> None:
    """Add ``submit`` to the ``omnispindle`` subparsers."""
    submit = command(commands, "submit", "submit a task; print its id, or wait for it", _submit)
    submit.add_argument("task_type", metavar="TYPE", help="the task type, run by its executor")
    add_task_options(submit)
    submit.add_argument(
        "--depends-on",
        action="append",
        type=task_id_arg,
        default=None,
        metavar="ID",
        help="a task that must succeed first (repeatable)",
    )
    submit.add_argument(
        "--delay", type=age_arg, default=None, help="hold it back: 30s, 10m, 2h, 1d"
    )
    submit.add_argument(
        "--idempotency-key",
        default=None,
        metavar="KEY",
        help="while a task with this key is unfinished, print its id instead",
    )
    submit.add_argument(
        "--group-key",
        default=None,
        metavar="KEY",
        help="its group (a tenant): a type with the fair strategy is shared between groups",
    )
    submit.add_argument("--wait", action="store_true", help="wait until it finishes, then print it")
    submit.add_argument(
        "--timeout",
        type=positive_seconds_arg,
        default=None,
        help="with --wait: seconds to wait at most (default: for ever)",
    )
    submit.add_argument("--json", action="store_true", help="print JSON for scripts")


def _submit(args: argparse.Namespace) -> int:
    from omnispindle.client import TaskQueueClient

    with open_queue(args) as queue:
        client = TaskQueueClient(local_queue=queue)
        task_id = client.submit_task(
            args.task_type,
            args.params,
            dependencies=args.depends_on,
            delay=args.delay,
            idempotency_key=args.idempotency_key,
            group_key=args.group_key,
            **task_options(args),
        )
        if args.wait:
            return report_finished([client.wait_for_task(task_id, args.timeout)], args.json)
    print(to_json({"task_id": task_id}) if args.json else task_id)
    return EXIT_OK
