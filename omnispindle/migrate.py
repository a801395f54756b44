"""Bring a database's ``omnispindle`` schema to the latest version with Alembic."""

from __future__ import annotations

import threading

import psycopg
from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool

from omnispindle._db.statements import data_dir

# Alembic keeps its migration context in module globals, so two threads of
# one process must not run it at once; the advisory lock covers processes.
_alembic_lock = threading.Lock()


def alembic_config() -> Config:
    """An Alembic config pointing at Omnispindle's own migrations."""
    config = Config()
    config.set_main_option("script_location", str(data_dir("migrations")))
    return config


def upgrade(dsn: str, revision: str = "head") -> None:
    """Migrate the database at ``dsn`` to ``revision``.

    Idempotent, and safe to run from many processes at once: the migration
    environment takes an advisory lock before reading the current version.

    Example:
        >>> upgrade("postgresql://postgres@localhost/app")  # doctest: +SKIP
    """
    _run(dsn, lambda config: command.upgrade(config, revision))


def downgrade(dsn: str, revision: str) -> None:
    """Migrate the database at ``dsn`` down to ``revision`` (``base`` removes everything)."""
    _run(dsn, lambda config: command.downgrade(config, revision))


def _run(dsn: str, action) -> None:
    engine = create_engine(
        "postgresql+psycopg://",
        creator=lambda: psycopg.connect(dsn),
        poolclass=NullPool,
    )
    try:
        with _alembic_lock, engine.begin() as connection:
            config = alembic_config()
            config.attributes["connection"] = connection
            action(config)
    finally:
        engine.dispose()
