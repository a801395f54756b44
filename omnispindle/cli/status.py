"""``omnispindle status``: the queues and the workers, at a glance."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from omnispindle._db import queries as q
from omnispindle.cli.exit_codes import EXIT_OK
from omnispindle.cli.formatting import format_table


def add_commands(commands: Any, command: Callable[..., argparse.ArgumentParser]) -> None:
    """Add ``status`` to the ``omnispindle`` subparsers."""
    status = command(commands, "status", "show queues and workers", _status)
    status.add_argument("--json", action="store_true", help="print JSON for scripts")


def _status(args: argparse.Namespace) -> int:
    from omnispindle.task_queue import TaskQueue

    queue = TaskQueue(args.dsn, migrate=False)
    try:
        queues = queue.db.run(q.inspection.queue_summary())
        workers = queue.db.run(q.inspection.worker_summary())
    finally:
        queue.shutdown()
    if args.json:
        print(json.dumps({"queues": queues, "workers": workers}, default=str, indent=2))
    else:
        print(format_table(queues, title="Queues"))
        print()
        print(format_table(workers, title="Workers"))
    return EXIT_OK
