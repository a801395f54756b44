"""Migrating a database's ``omnispindle`` schema with Alembic, and the list of migrations.

Each migration is a pair of SQL scripts in ``sql/migrations`` (``NAME.sql``
and ``NAME.down.sql``) and an Alembic revision of the same name that runs
them; the names sort in the order they apply.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator
from functools import cache
from typing import Any

import psycopg
from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool

from omnispindle._db import queries as q
from omnispindle._db.pool import execute
from omnispindle._db.query import Query
from omnispindle._db.statements import data_dir

# Alembic keeps its migration context in module globals, so two threads of
# one process must not run it at once; the advisory lock covers processes.
_alembic_lock = threading.Lock()


def migration_names(through: str | None = None) -> tuple[str, ...]:
    """The migrations, oldest first, e.g. ``("0001_initial", ...)``: all of them, or
    those up to and including ``through``.

    Raises:
        ValueError: no migration is called ``through``.
    """
    names = _all_migrations()
    if through is None:
        return names
    if through not in names:
        raise ValueError(f"no migration named {through!r}; they are {', '.join(names)}")
    return names[: names.index(through) + 1]


@cache
def _all_migrations() -> tuple[str, ...]:
    folder = data_dir("sql") / "migrations"
    return tuple(
        sorted(path.stem for path in folder.glob("*.sql") if not path.name.endswith(".down.sql"))
    )


def head_revision() -> str:
    """The latest migration: the revision a current database records."""
    return migration_names()[-1]


def alembic_config() -> Config:
    """An Alembic config pointing at Omnispindle's own migrations."""
    config = Config()
    config.set_main_option("script_location", str(data_dir("migrations")))
    return config


def recorded_revision(dsn: str) -> str | None:
    """The revision the database records; None before the first migration."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        return execute(conn, _recorded_revision())


def _recorded_revision() -> Generator[Query[Any], Any, str | None]:
    if not (yield q.setup.version_table_exists()):
        return None
    revision: str | None = yield q.setup.schema_version()
    return revision


def upgrade_if_behind(dsn: str) -> None:
    """Migrate to the latest revision unless the database records it already.

    A current database is only read: one query, no Alembic, no lock.
    """
    if recorded_revision(dsn) != head_revision():
        upgrade(dsn)


def upgrade(dsn: str, revision: str = "head") -> None:
    """Migrate the database at ``dsn`` to ``revision``; idempotent, safe from many processes."""
    _run(dsn, lambda config: command.upgrade(config, revision))


def downgrade(dsn: str, revision: str) -> None:
    """Migrate the database at ``dsn`` down to ``revision`` (``base`` removes everything)."""
    _run(dsn, lambda config: command.downgrade(config, revision))


def _run(dsn: str, action: Callable[[Config], None]) -> None:
    engine = create_engine(
        "postgresql+psycopg://", creator=lambda: psycopg.connect(dsn), poolclass=NullPool
    )
    try:
        with _alembic_lock, engine.begin() as connection:
            config = alembic_config()
            config.attributes["connection"] = connection
            action(config)
    finally:
        engine.dispose()
