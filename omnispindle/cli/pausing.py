"""``omnispindle pause TYPE`` and ``omnispindle resume TYPE``: hold a task type's
pending tasks back from every worker, and let them run again."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from omnispindle._client import operations
from omnispindle._db.query import Query
from omnispindle.cli.complain import complain
from omnispindle.cli.exit_codes import EXIT_OK, EXIT_USAGE
from omnispindle.cli.formatting import to_json
from omnispindle.cli.tasks import open_queue
from omnispindle.errors import ValidationError


def add_commands(commands: Any, command: Callable[..., argparse.ArgumentParser]) -> None:
    """Add ``pause`` and ``resume`` to the ``omnispindle`` subparsers."""
    pause = command(commands, "pause", "stop workers claiming a task type's tasks", _pause)
    pause.add_argument("task_type", metavar="TYPE", help="the task type to pause")
    pause.add_argument("--reason", default=None, help="why, shown by `omnispindle status`")
    pause.add_argument("--json", action="store_true", help="print JSON for scripts")
    resume = command(commands, "resume", "let workers claim a paused task type again", _resume)
    resume.add_argument("task_type", metavar="TYPE", help="the task type to resume")
    resume.add_argument("--json", action="store_true", help="print JSON for scripts")


def _pause(args: argparse.Namespace) -> int:
    try:
        change = operations.pause_task_type(args.task_type, args.reason)
    except ValidationError as exc:  # a bad TYPE or --reason is a bad argument
        return _usage_error(exc)
    return _run(args, change, ("paused", "was already paused"))


def _resume(args: argparse.Namespace) -> int:
    try:
        change = operations.resume_task_type(args.task_type)
    except ValidationError as exc:
        return _usage_error(exc)
    return _run(args, change, ("resumed", "was not paused"))


def _run(args: argparse.Namespace, change: Query[bool], outcomes: tuple[str, str]) -> int:
    """Run a checked change and say whether it changed anything (neither is an error)."""
    with open_queue(args) as queue:
        changed = queue.db.run(change)
    message = f"task type {args.task_type} {outcomes[0] if changed else outcomes[1]}"
    if args.json:
        print(to_json({"task_type": args.task_type, "changed": changed, "message": message}))
    else:
        print(message)
    return EXIT_OK


def _usage_error(exc: ValidationError) -> int:
    complain(f"omnispindle: {exc}")
    return EXIT_USAGE
