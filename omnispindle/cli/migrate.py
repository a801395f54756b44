"""``omnispindle migrate``: bring the schema to a revision."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from omnispindle.cli.args import given_dsn, given_schema
from omnispindle.cli.complain import complain
from omnispindle.cli.exit_codes import EXIT_OK, EXIT_USAGE
from omnispindle.errors import ConfigurationError, ValidationError


def add_commands(commands: Any, command: Callable[..., argparse.ArgumentParser]) -> None:
    """Add ``migrate`` and ``grant`` to the ``omnispindle`` subparsers."""
    migrate = command(
        commands, "migrate", "bring the database schema to the latest version", _migrate
    )
    target = migrate.add_mutually_exclusive_group()
    target.add_argument("--revision", default="head", help="target revision")
    target.add_argument(
        "--stamp",
        metavar="REVISION",
        default=None,
        help="record REVISION as the schema's without running any migration (for a "
        "schema your own Alembic history installed before revisions were recorded)",
    )
    add_grant_command(commands, command)


def add_grant_command(commands: Any, command: Callable[..., argparse.ArgumentParser]) -> None:
    """Add ``grant`` to the ``omnispindle`` subparsers."""
    from omnispindle.migrate import ACCESS

    grant = command(
        commands,
        "grant",
        "give an existing database role the rights of an observer, producer or worker",
        _grant,
    )
    grant.add_argument("access", choices=ACCESS, help="the kind of access")
    grant.add_argument(
        "role",
        help="the role's name, as createuser takes it (the role created before: "
        "createuser NAME, or CREATE ROLE ... LOGIN)",
    )


def _grant(args: argparse.Namespace) -> int:
    from omnispindle.migrate import grant

    dsn = given_dsn(args)
    if not dsn:
        raise ConfigurationError("grant needs --dsn or $OMNISPINDLE_DSN: roles live in a server")
    try:
        grant(dsn, args.role, args.access, schema=given_schema(args))
    except ValidationError as exc:  # no role has this name: a bad argument
        complain(f"omnispindle: {exc}")
        return EXIT_USAGE
    print(f"omnispindle: granted {args.access} access to {args.role}")
    return EXIT_OK


def _migrate(args: argparse.Namespace) -> int:
    from omnispindle._db.embedded import start_server

    dsn = given_dsn(args)
    if dsn:
        revision = _migrate_database(dsn, args)
    else:
        server = start_server()
        try:
            revision = _migrate_database(server.get_uri(), args)
        finally:
            server.cleanup()
    print(f"omnispindle: schema at {revision}")
    return EXIT_OK


def _migrate_database(dsn: str, args: argparse.Namespace) -> str:
    """Migrate (or stamp), then read back the revision the schema is at: a target
    it is already past leaves it where it is."""
    from omnispindle._db.namespace import Namespace
    from omnispindle._db.schema_state import head_revision, recorded_revision
    from omnispindle.migrate import stamp, upgrade

    schema = given_schema(args)
    if args.stamp:
        stamp(dsn, args.stamp, schema=schema)
    else:
        upgrade(dsn, args.revision, schema=schema)
    revision = recorded_revision(dsn, Namespace(schema))
    if revision is None:
        return "base"
    return "head" if revision == head_revision() else revision
