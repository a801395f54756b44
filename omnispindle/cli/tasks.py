"""The commands for people: ``tasks``, ``retry``, ``cancel`` and ``wait``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from omnispindle._client import operations
from omnispindle._client.inspection import list_tasks, require_tasks, task_detail
from omnispindle._client.records import CancelOutcome, RetryOutcome
from omnispindle._db.rows import TaskRecord
from omnispindle.cli.args import (
    age_arg,
    positive_int_arg,
    positive_seconds_arg,
    queue_of,
    task_id_arg,
)
from omnispindle.cli.exit_codes import EXIT_OK, EXIT_TASK_FAILED, EXIT_USAGE
from omnispindle.cli.formatting import to_json
from omnispindle.cli.progress import PROGRESS_MODES, ProgressBar, progress_wanted
from omnispindle.states import TaskState

if TYPE_CHECKING:
    from omnispindle.client import TaskQueueClient
    from omnispindle.task_queue import TaskQueue
from omnispindle.cli.complain import complain
from omnispindle.cli.views import task_detail_text, task_list_table, wait_table

DEFAULT_LIMIT = 50


def add_commands(commands: Any, command: Callable[..., argparse.ArgumentParser]) -> None:
    """Add the commands to the ``omnispindle`` subparsers, through cli's ``command`` factory."""
    tasks = command(commands, "tasks", "list tasks (newest first), or show one in full", _tasks)
    tasks.add_argument(
        "task_id",
        nargs="?",
        type=task_id_arg,
        metavar="ID",
        help="show this task in full: fields, parameters, result, "
        "dependencies, dependents and every error with its traceback",
    )
    tasks.add_argument(
        "--type",
        dest="task_types",
        action="append",
        default=[],
        metavar="T",
        help="only tasks of this type (repeat for several)",
    )
    tasks.add_argument(
        "--state",
        dest="states",
        action="append",
        default=[],
        choices=[s.value for s in TaskState],
        metavar="S",
        help="only tasks in this state: %(choices)s (repeat for several)",
    )
    tasks.add_argument(
        "--older-than",
        type=age_arg,
        default=None,
        metavar="AGE",
        help="only tasks created longer ago than AGE, e.g. 30s, 10m, 2h, 1d",
    )
    tasks.add_argument(
        "--limit",
        type=positive_int_arg,
        default=None,
        metavar="N",
        help=f"list at most N tasks (default {DEFAULT_LIMIT})",
    )
    _json_flag(tasks)

    retry = command(
        commands,
        "retry",
        "run failed tasks again, each with one more attempt (all or nothing)",
        _retry,
    )
    retry.add_argument(
        "task_ids",
        nargs="+",
        type=task_id_arg,
        metavar="ID",
        help="failed tasks to put back to pending",
    )
    retry.add_argument(
        "--with-dependents",
        action="store_true",
        help="also the dependents their failures cancelled, which wait for them again",
    )
    _json_flag(retry)

    cancel = command(
        commands,
        "cancel",
        "cancel tasks and their dependents (all or nothing); running ones are asked to stop",
        _cancel,
    )
    cancel.add_argument(
        "task_ids", nargs="+", type=task_id_arg, metavar="ID", help="tasks to cancel"
    )
    cancel.add_argument(
        "--reason", default=None, metavar="TEXT", help="why, stored as the tasks' cancel_reason"
    )
    _json_flag(cancel)

    wait = command(commands, "wait", "wait until tasks finish, then print them", _wait)
    wait.add_argument(
        "task_ids", nargs="+", type=task_id_arg, metavar="ID", help="tasks to wait for"
    )
    wait.add_argument(
        "--timeout",
        type=positive_seconds_arg,
        default=None,
        metavar="SECONDS",
        help="give up after this many seconds (exit code 5; default: wait for ever)",
    )
    wait.add_argument(
        "--progress",
        choices=PROGRESS_MODES,
        default="auto",
        help="progress bar on stderr: auto (only on a terminal), always or never",
    )
    _json_flag(wait)


def _json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")


def _tasks(args: argparse.Namespace) -> int:
    if args.task_id is not None:
        if args.task_types or args.states or args.older_than is not None or args.limit:
            return _usage_error(
                "--type, --state, --older-than and --limit apply to a list; drop them, or the ID"
            )
        with open_queue(args) as queue:
            task = queue.read(task_detail(args.task_id))
        print(to_json(task) if args.json else task_detail_text(task))
        return EXIT_OK
    limit = args.limit or DEFAULT_LIMIT
    with open_queue(args) as queue:
        # One row more than shown tells whether the list was cut.
        rows = queue.read(
            list_tasks(
                task_types=args.task_types,
                states=args.states,
                older_than=args.older_than,
                limit=limit + 1,
            )
        )
    shown = rows[:limit]
    if args.json:
        print(to_json(shown))
    else:
        print(task_list_table(shown))
        if len(rows) > limit:
            print(f"(the newest {limit} shown; --limit N shows more)")
    return EXIT_OK


def _retry(args: argparse.Namespace) -> int:
    with open_queue(args) as queue:
        outcomes = queue.db.run(operations.retry_tasks(args.task_ids, args.with_dependents))
    _print_outcomes(outcomes, args.json)
    return EXIT_OK


def _cancel(args: argparse.Namespace) -> int:
    with open_queue(args) as queue:
        outcomes = queue.db.run(operations.cancel_tasks(args.task_ids, args.reason))
    _print_outcomes(outcomes, args.json)
    return EXIT_OK


def _wait(args: argparse.Namespace) -> int:
    from omnispindle.client import TaskQueueClient

    ids = list(dict.fromkeys(args.task_ids))
    with open_queue(args) as queue:
        # Checked first, so that an unknown id never leaves a half-drawn bar.
        queue.db.run(require_tasks(ids))
        records = _wait_for(TaskQueueClient(local_queue=queue), ids, args)
    return report_finished(records, args.json)


def report_finished(records: Sequence[TaskRecord], as_json: bool) -> int:
    """Print finished tasks; the exit code says whether every one succeeded."""
    print(to_json(records) if as_json else wait_table(records))
    succeeded = all(r["state"] == TaskState.SUCCEEDED.value for r in records)
    return EXIT_OK if succeeded else EXIT_TASK_FAILED


def _wait_for(
    client: TaskQueueClient, ids: list[int], args: argparse.Namespace
) -> list[TaskRecord]:
    """Wait for the tasks, drawing a progress bar on stderr if asked to."""
    if not progress_wanted(args.progress, sys.stderr):
        return client.wait_for_batch(ids, args.timeout)
    bar = ProgressBar(len(ids), sys.stderr)
    bar.update(0)
    try:
        return client.wait_for_batch(ids, args.timeout, progress=bar.update)
    finally:
        bar.close()


def open_queue(args: argparse.Namespace) -> TaskQueue:
    """The queue at ``--dsn``, never migrated: these commands only read and fix tasks."""
    return queue_of(args, migrate=False)


def _print_outcomes(outcomes: Sequence[CancelOutcome | RetryOutcome], as_json: bool) -> None:
    print(to_json(outcomes) if as_json else "\n".join(o["message"] for o in outcomes))


def _usage_error(message: str) -> int:
    complain(f"omnispindle: {message}")
    return EXIT_USAGE
