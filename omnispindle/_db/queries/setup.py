"""Typed statements for set-up (``sql/queries/setup.sql``)."""

from __future__ import annotations

from omnispindle._db.query import Query, Row, nothing, value
from omnispindle._db.statements import RUNTIME, Statement


def lock_migrations() -> Query[None]:
    """Serialise migrators for the rest of the transaction."""
    return Query(RUNTIME["lock_migrations"], None, nothing)


def create_schema() -> Query[None]:
    """Create the ``omnispindle`` schema if it is missing."""
    return Query(RUNTIME["create_schema"], None, nothing)


def schema_installed() -> Query[bool]:
    """Whether the ``omnispindle`` tables exist."""
    return Query(RUNTIME["schema_installed"], None, value("installed"))


def version_table_exists() -> Query[bool]:
    """Whether Alembic's version table exists."""
    return Query(RUNTIME["version_table_exists"], None, value("present"))


def schema_version() -> Query[str | None]:
    """The revision Alembic recorded (its version table must exist)."""
    return Query(RUNTIME["schema_version"], None, _first_version)


def _first_version(found: list[Row]) -> str | None:
    return str(found[0]["version_num"]) if found else None


def listen(channel: str) -> Statement:
    """The LISTEN statement of a notification channel (run as is, on a dedicated connection).

    Raises:
        KeyError: no statement listens on that channel.
    """
    return RUNTIME[f"listen_{channel.removeprefix('omnispindle_')}"]
