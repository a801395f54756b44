"""Bring a database's ``omnispindle`` schema to the latest version with Alembic.

Example:
    >>> from omnispindle.migrate import upgrade
    >>> upgrade("postgresql://postgres@localhost/app")  # doctest: +SKIP
"""

from __future__ import annotations

from omnispindle._db import migrations

__all__ = ["downgrade", "stamp", "upgrade"]


def upgrade(dsn: str, revision: str = "head") -> None:
    """Migrate the database at ``dsn`` to ``revision``.

    Idempotent, and safe to run from many processes at once: the migration
    environment takes an advisory lock before reading the current version.

    Raises:
        DatabaseUnavailableError: the database cannot be reached.
        SchemaOutdatedError: the schema is installed but records no revision
            (see [stamp][omnispindle.migrate.stamp]).
    """
    migrations.upgrade(dsn, revision)


def downgrade(dsn: str, revision: str) -> None:
    """Migrate the database at ``dsn`` down to ``revision`` (``base`` removes everything)."""
    migrations.downgrade(dsn, revision)


def stamp(dsn: str, revision: str) -> None:
    """Record ``revision`` as the schema's without running any migration: for a
    schema an Alembic history of your own installed before ``apply_migration``
    recorded revisions.

    Raises:
        ValidationError: no migration is called ``revision``.
    """
    migrations.stamp(dsn, revision)
