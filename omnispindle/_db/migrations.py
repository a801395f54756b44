"""Migrating a database's ``omnispindle`` schema with Alembic, and the list of migrations.

Each migration is a pair of SQL scripts in ``sql/migrations`` (``NAME.sql``
and ``NAME.down.sql``) and an Alembic revision of the same name that runs
them; the names sort in the order they apply.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextvars import ContextVar

from alembic import command
from alembic.config import Config
from alembic.util import CommandError
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool

from omnispindle._db import queries as q
from omnispindle._db.caller import as_psycopg
from omnispindle._db.connecting import connect
from omnispindle._db.namespace import DEFAULT, Namespace
from omnispindle._db.pool import execute
from omnispindle._db.query import Plan
from omnispindle._db.schema_state import (
    migration_names,
    require_current,
    schema_state,
)
from omnispindle._db.sqlstate import translated_errors
from omnispindle._db.statements import data_dir
from omnispindle.errors import ValidationError

# Alembic keeps its migration context in module globals, so two threads of
# one process must not run it at once; the migration's lock covers processes.
_alembic_lock = threading.Lock()
# The schema Omnispindle's own Alembic environment is migrating, while it runs
# its revisions (None otherwise): Alembic records each revision itself there,
# so apply_migration must not, and its scripts are for that schema.
alembic_namespace: ContextVar[Namespace | None] = ContextVar(
    "omnispindle_alembic_namespace", default=None
)


def alembic_config() -> Config:
    """An Alembic config pointing at Omnispindle's own migrations."""
    config = Config()
    config.set_main_option("script_location", str(data_dir("migrations")))
    return config


def prepare(dsn: str, migrate: bool, namespace: Namespace = DEFAULT, pooler: bool = False) -> None:
    """Check the database's schema, migrating first when asked to and behind.

    A current database is only read (a few queries on one connection, no
    Alembic, no lock), so that every process may start this way. ``pooler``:
    the DSN leads to a pooler in transaction mode.

    Raises:
        DatabaseUnavailableError: the database cannot be reached.
        SchemaMissingError: not migrating, and the schema is missing or behind.
    """
    with connect(dsn, pooler=pooler) as conn:
        state = execute(conn, schema_state(), namespace)
    if migrate and not state.current:
        upgrade(dsn, namespace=namespace)
    else:
        require_current(state, namespace)


def record_applied(name: str) -> Plan[None]:
    """Record what applying migration ``name`` (or ``NAME.down``) leaves the schema at,
    where ``omnispindle migrate`` and the schema check look for it (nothing
    while Omnispindle's own Alembic history runs, which records it itself).

    Raises:
        ValidationError: no migration is called ``name`` (at once, before the plan runs).
    """
    return _record(_revision_after(name), alembic_namespace.get() is not None)


def _record(revision: str | None, alembic_records: bool) -> Plan[None]:
    if alembic_records:
        return
    yield q.setup.create_version_table()
    yield q.setup.forget_other_revisions(revision)
    if revision is not None:
        yield q.setup.record_revision(revision)


def _revision_after(name: str) -> str | None:
    """The revision a database is at once migration ``name`` ran: itself, or for
    ``NAME.down`` the one before (None below the first)."""
    if not name.endswith(".down"):
        migration_names(through=name)  # an unknown name is refused before anything runs
        return name
    before = migration_names(through=name.removesuffix(".down"))[:-1]
    return before[-1] if before else None


def upgrade(dsn: str, revision: str = "head", namespace: Namespace = DEFAULT) -> None:
    """Migrate the database at ``dsn`` to ``revision``; idempotent, safe from many processes.

    Raises:
        ValidationError: no migration is called ``revision``; nothing changed.
        SchemaOutdatedError: the schema is installed but records no revision, so
            that migrating would start again from the first migration.
    """
    with connect(dsn) as conn:
        state = execute(conn, schema_state(), namespace)
    if state.installed and state.revision is None:
        require_current(state, namespace)
    _run(dsn, namespace, lambda config: command.upgrade(config, revision))


def downgrade(dsn: str, revision: str, namespace: Namespace = DEFAULT) -> None:
    """Migrate the database at ``dsn`` down to ``revision`` (``base`` removes everything).

    Raises:
        ValidationError: no migration is called ``revision``; nothing changed.
    """
    _run(dsn, namespace, lambda config: command.downgrade(config, revision))


def stamp(dsn: str, revision: str, namespace: Namespace = DEFAULT) -> None:
    """Record ``revision`` as the schema's without running any migration, and put
    back the rows the migrations up to it insert where they are missing (a copy
    by pg_dump --schema-only, or without the queue's data, has the tables and
    neither the revision nor those rows).

    Raises:
        ValidationError: no migration is called ``revision``.
    """
    applied = migration_names(through=revision)

    def action(config: Config) -> None:
        command.stamp(config, revision)
        execute(as_psycopg(config.attributes["connection"]), _seed_rows(applied), namespace)

    _run(dsn, namespace, action)


def _seed_rows(applied: tuple[str, ...]) -> Plan[None]:
    """The rows migrations insert once, for a schema at the last of ``applied``."""
    if "0007_guarded_rows" in applied:
        yield q.setup.seed_maintenance_locks()
    if "0008_dashboard" in applied:
        yield q.setup.seed_outcome_rollup()


def _run(dsn: str, namespace: Namespace, action: Callable[[Config], None]) -> None:
    engine = create_engine(
        "postgresql+psycopg://", creator=lambda: connect(dsn, autocommit=False), poolclass=NullPool
    )
    try:
        with translated_errors(), _alembic_lock, engine.begin() as connection:
            config = alembic_config()
            config.attributes["connection"] = connection
            config.attributes["namespace"] = namespace
            action(config)
    except CommandError as exc:  # a revision Alembic cannot find; the transaction rolled back
        raise ValidationError(str(exc)) from None
    finally:
        engine.dispose()


def grant(dsn: str, role: str, access: str, namespace: Namespace = DEFAULT) -> None:
    """Run ``omnispindle.grant_access`` for ``role``; see ``omnispindle.migrate.grant``."""
    with connect(dsn) as conn:
        execute(conn, q.setup.grant_access(role, access), namespace)
