"""The ``omnispindle`` command: parsing, dispatch, and one exit code per outcome.

Each command lives in a module of its own that adds it to the parser
(``add_commands``); this module only wires them together.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

import psycopg
import sqlalchemy.exc

from omnispindle._version import __version__
from omnispindle.cli import (
    bench,
    dashboard,
    demo,
    metrics,
    migrate,
    pausing,
    prune,
    schedules,
    status,
    submit,
    tasks,
    type_limits,
    worker,
)
from omnispindle.cli.args import queue_arguments
from omnispindle.cli.complain import complain
from omnispindle.cli.exit_codes import (
    EPILOG,
    EXIT_CONFIG,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_TIMEOUT,
    EXIT_UNKNOWN_TASK,
    EXIT_USAGE,
)
from omnispindle.errors import OmnispindleError, TaskNotFoundError, WaitTimeoutError, first_line

__all__ = ["main", "parser"]

# In the order `omnispindle --help` lists them.
COMMAND_MODULES = (
    migrate,
    worker,
    status,
    metrics,
    prune,
    bench,
    demo,
    tasks,
    submit,
    schedules,
    pausing,
    type_limits,
    dashboard,
)

# The first matching class decides; typed errors not listed here mean a refusal.
_EXIT_CODES: tuple[tuple[type[OmnispindleError], int], ...] = (
    (TaskNotFoundError, EXIT_UNKNOWN_TASK),
    (WaitTimeoutError, EXIT_TIMEOUT),
    (worker.UnusableExecutors, EXIT_CONFIG),
    (OmnispindleError, EXIT_ERROR),
)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code (see ``omnispindle.cli.exit_codes``)."""
    try:
        args = parser().parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error already reported in one line
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    args.argv = list(sys.argv[1:] if argv is None else argv)  # a supervisor's children rerun it
    _configure_logging(args.log_level)
    try:
        handler: Callable[[argparse.Namespace], int] = args.handler
        return handler(args)
    except OmnispindleError as exc:
        complain(f"omnispindle: {first_line(exc)}")
        return next(code for kind, code in _EXIT_CODES if isinstance(exc, kind))
    except (psycopg.Error, sqlalchemy.exc.DBAPIError) as exc:
        cause = getattr(exc, "orig", None) or exc
        complain(f"omnispindle: database error: {first_line(cause)}")
        return EXIT_ERROR
    except KeyboardInterrupt:
        complain("\nomnispindle: interrupted")
        return EXIT_INTERRUPTED


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if level != "DEBUG":
        # Alembic and pgserver narrate every start at INFO; only warnings matter here.
        for chatty in ("alembic", "pgserver"):
            logging.getLogger(chatty).setLevel(logging.WARNING)


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the epilog's lines, and names each option's default where its help does not."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if (
            not action.option_strings
            or "default" in text
            or action.default in (None, False, argparse.SUPPRESS)
        ):
            return text
        return f"{text} (default %(default)s)"


class _Parser(argparse.ArgumentParser):
    """Reports a usage error in one line, ``omnispindle: ...``, and exits with code 2."""

    def error(self, message: str) -> Any:
        self.exit(EXIT_USAGE, f"omnispindle: {message} (see `{self.prog} --help`)\n")


def parser() -> argparse.ArgumentParser:
    """The command line of every command."""
    top = _Parser(
        prog="omnispindle",
        description="A task queue inside PostgreSQL.",
        epilog=EPILOG,
        formatter_class=_HelpFormatter,
    )
    top.add_argument("--version", action="version", version=f"omnispindle {__version__}")
    top.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="how much to log (default INFO)",
    )
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.add_commands(commands, command)
    return top


def command(
    commands: Any,
    name: str,
    help_text: str,
    handler: Callable[[argparse.Namespace], int],
    with_dsn: bool = True,
    with_queue_options: bool = True,
) -> argparse.ArgumentParser:
    """Add the command ``name``, run by ``handler``, with ``--dsn`` and the queue's
    options (``--schema``, ``--pooler``, ``--listen-dsn``, ``--read-dsn``) unless told
    otherwise."""
    sub: argparse.ArgumentParser = commands.add_parser(
        name, help=help_text, description=help_text, formatter_class=_HelpFormatter
    )
    if with_dsn:
        sub.add_argument(
            "--dsn",
            default=None,
            help="Postgres DSN (default $OMNISPINDLE_DSN, else the embedded server)",
        )
    if with_dsn and with_queue_options:
        queue_arguments(sub)
    sub.set_defaults(handler=handler)
    return sub
