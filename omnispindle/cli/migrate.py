"""``omnispindle migrate``: bring the schema to a revision."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import Any

from omnispindle.cli.exit_codes import EXIT_OK


def add_commands(commands: Any, command: Callable[..., argparse.ArgumentParser]) -> None:
    """Add ``migrate`` to the ``omnispindle`` subparsers."""
    migrate = command(
        commands, "migrate", "bring the database schema to the latest version", _migrate
    )
    migrate.add_argument("--revision", default="head", help="target revision (default head)")


def _migrate(args: argparse.Namespace) -> int:
    from omnispindle._db.embedded import DSN_VARIABLE, start_server
    from omnispindle.migrate import upgrade

    dsn = args.dsn or os.environ.get(DSN_VARIABLE)
    if dsn:
        upgrade(dsn, args.revision)
    else:
        server = start_server()
        try:
            upgrade(server.get_uri(), args.revision)
        finally:
            server.cleanup()
    print(f"omnispindle: schema at {args.revision}")
    return EXIT_OK
