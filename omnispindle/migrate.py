"""Bring a database's ``omnispindle`` schema to the latest version with Alembic.

Example:
    >>> from omnispindle.migrate import upgrade
    >>> upgrade("postgresql://postgres@localhost/app")  # doctest: +SKIP
"""

from __future__ import annotations

from omnispindle._db import migrations

__all__ = ["downgrade", "upgrade"]


def upgrade(dsn: str, revision: str = "head") -> None:
    """Migrate the database at ``dsn`` to ``revision``.

    Idempotent, and safe to run from many processes at once: the migration
    environment takes an advisory lock before reading the current version.
    """
    migrations.upgrade(dsn, revision)


def downgrade(dsn: str, revision: str) -> None:
    """Migrate the database at ``dsn`` down to ``revision`` (``base`` removes everything)."""
    migrations.downgrade(dsn, revision)
