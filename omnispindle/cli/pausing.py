"""``omnispindle pause TYPE`` and ``omnispindle resume TYPE``: hold a task type's
pending tasks back from every worker, and let them run again."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from omnispindle._client import operations
from omnispindle.cli.exit_codes import EXIT_OK
from omnispindle.cli.formatting import to_json
from omnispindle.cli.tasks import open_queue


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
    with open_queue(args) as queue:
        changed = queue.db.run(operations.pause_task_type(args.task_type, args.reason))
    was = "paused" if changed else "was already paused"
    _report(args, changed, f"task type {args.task_type} {was}")
    return EXIT_OK


def _resume(args: argparse.Namespace) -> int:
    with open_queue(args) as queue:
        changed = queue.db.run(operations.resume_task_type(args.task_type))
    was = "resumed" if changed else "was not paused"
    _report(args, changed, f"task type {args.task_type} {was}")
    return EXIT_OK


def _report(args: argparse.Namespace, changed: bool, message: str) -> None:
    if args.json:
        print(to_json({"task_type": args.task_type, "changed": changed, "message": message}))
    else:
        print(message)
