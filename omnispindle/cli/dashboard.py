"""``omnispindle dashboard``: serve the web dashboard of a queue."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from omnispindle.cli.args import given_dsn, port_arg
from omnispindle.cli.complain import complain
from omnispindle.cli.exit_codes import EXIT_ERROR, EXIT_OK, EXIT_USAGE

if TYPE_CHECKING:
    from omnispindle.dashboard.security import Auth

TOKEN_VARIABLE = "OMNISPINDLE_DASHBOARD_TOKEN"
DEFAULT_HOST = "127.0.0.1"  # as omnispindle.dashboard.serving has it, without importing it
DEFAULT_PORT = 8187


def add_commands(commands: Any, command: Callable[..., argparse.ArgumentParser]) -> None:
    """Add ``dashboard`` to the ``omnispindle`` subparsers."""
    dashboard = command(
        commands,
        "dashboard",
        "serve the web dashboard: counts, charts, workers, tasks, workflows and actions",
        _dashboard,
        with_queue_options=False,
    )
    dashboard.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help="address to listen on; one beyond this machine needs --token or --basic-auth",
    )
    dashboard.add_argument("--port", type=port_arg, default=DEFAULT_PORT, help="port")
    dashboard.add_argument(
        "--read-only", action="store_true", help="offer no action, and refuse every POST"
    )
    dashboard.add_argument(
        "--show-payloads",
        action="store_true",
        help="show parameters, results, errors and partial results (hidden by default)",
    )
    credentials = dashboard.add_mutually_exclusive_group()
    credentials.add_argument(
        "--token",
        default=os.environ.get(TOKEN_VARIABLE),
        help=f"ask every request for this bearer token (default ${TOKEN_VARIABLE})",
    )
    credentials.add_argument(
        "--basic-auth", default=None, metavar="USER:PASSWORD", help="ask for HTTP basic auth"
    )
    dashboard.add_argument(
        "--write-dsn",
        default=None,
        help="a DSN for the actions, when --dsn's role may only read",
    )
    dashboard.add_argument(
        "--read-dsn",
        default=None,
        help="a streaming replica for the pages' reads (the actions stay on --dsn)",
    )
    dashboard.add_argument(
        "--pooler",
        action="store_true",
        help="the DSNs lead to a pooler in transaction mode (PgBouncer): prepare no statement",
    )
    dashboard.add_argument(
        "--schema",
        default=None,
        help="the queue's schema (default $OMNISPINDLE_SCHEMA, else omnispindle)",
    )


def _dashboard(args: argparse.Namespace) -> int:
    dsn = given_dsn(args)
    if dsn is None:
        complain("omnispindle: the dashboard needs --dsn (or $OMNISPINDLE_DSN)")
        return EXIT_USAGE
    try:
        from omnispindle.dashboard import serving
    except ImportError as exc:
        complain(f"omnispindle: the dashboard needs omnispindle[dashboard] ({exc})")
        return EXIT_ERROR
    serving.serve(
        dsn,
        host=args.host,
        port=args.port,
        read_only=args.read_only,
        show_payloads=args.show_payloads,
        auth=_auth(args),
        schema=args.schema,
        write_dsn=args.write_dsn,
        read_dsn=args.read_dsn,
        pooler=args.pooler,
    )
    return EXIT_OK


def _auth(args: argparse.Namespace) -> Auth | None:
    """The credentials asked for, if any.

    Raises:
        ConfigurationError: an empty token, or basic credentials without ``:``.
    """
    from omnispindle.dashboard.security import BasicAuth, TokenAuth

    if args.basic_auth is not None:
        return BasicAuth.parse(args.basic_auth)
    if args.token is not None:
        return TokenAuth(args.token)
    return None
