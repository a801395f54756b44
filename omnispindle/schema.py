"""The SQL of Omnispindle's migrations, for your own Alembic history to execute.

Install Omnispindle beside your tables from a revision of yours (then create
queues with ``TaskQueue(..., migrate=False)``). A revision pins the migrations
it applies, so that it does the same after an upgrade of Omnispindle; when a
release adds a migration, add a revision of yours that applies the new one::

    from alembic import op
    from omnispindle.schema import apply_migration, migration_names

    APPLIES = migration_names(through="0012_chain_steps")

    def upgrade():
        for name in APPLIES:
            apply_migration(op.get_bind(), name)

    def downgrade():
        for name in reversed(APPLIES):
            apply_migration(op.get_bind(), f"{name}.down")
"""

from __future__ import annotations

from typing import Any

from omnispindle._db.caller import CallerConnection, as_psycopg
from omnispindle._db.migrations import alembic_namespace, record_applied
from omnispindle._db.namespace import DEFAULT, Namespace
from omnispindle._db.pool import execute
from omnispindle._db.schema_state import migration_file, migration_names
from omnispindle._db.statements import script
from omnispindle.errors import ConfigurationError

__all__ = ["apply_migration", "migration_names", "migration_sql"]


def migration_sql(name: str, *, schema: str = "omnispindle") -> str:
    """Return the SQL script of migration ``name`` (e.g. ``"0001_initial"``, or
    ``"0001_initial.down"`` to undo it), for the queue in ``schema``.

    Raises:
        ValidationError: no migration is called ``name`` (``migration_names()``
            lists them), or ``schema`` is not a name a queue may use.
    """
    return Namespace(schema).render(script(migration_file(name)))


def apply_migration(bind: CallerConnection | Any, name: str, *, schema: str | None = None) -> None:
    """Execute migration ``name`` on a SQLAlchemy connection (or a psycopg one),
    inside its transaction, and record the revision it leaves the schema at.

    ``schema`` is the queue's schema (default ``omnispindle``; inside
    Omnispindle's own Alembic environment, the one it migrates). The revision
    goes to that schema's ``alembic_version``, where ``omnispindle
    migrate``, ``TaskQueue`` and every command look for it (your own history
    keeps its own version table). The script runs through the psycopg
    connection itself, without SQLAlchemy's parameter parsing, so its ``%``
    and ``:`` stay literal.

    Raises:
        ValidationError: no migration is called ``name`` (``migration_names()``
            lists them; a ``ValueError`` too), or ``schema`` is not a name a
            queue may use; nothing ran.
        ConfigurationError: ``bind`` is Alembic's offline mode's (``--sql``),
            which executes nothing: write ``op.execute(migration_sql(name))``
            into the output instead.
    """
    path = migration_file(name)  # checks the name before anything runs
    _refuse_offline(bind, name)
    namespace = _namespace(schema)
    conn = as_psycopg(bind)
    record = record_applied(name)
    conn.execute(namespace.render(script(path)))
    execute(conn, record, namespace)


def _refuse_offline(bind: object, name: str) -> None:
    """In offline mode, ``op.get_bind()`` is a mock that only writes SQL out: a
    script run through psycopg has no connection to go to."""
    from sqlalchemy.engine.mock import MockConnection

    if isinstance(bind, MockConnection):
        raise ConfigurationError(
            f"apply_migration cannot apply {name!r} in Alembic's offline mode (--sql), "
            "which connects to no database: put its script into the output with "
            f"op.execute(migration_sql({name!r}, schema=...)) instead, and once the "
            "output has run, record the last one with omnispindle migrate --dsn ... "
            "--stamp REVISION"
        )


def _namespace(schema: str | None) -> Namespace:
    if schema is not None:
        return Namespace(schema)
    return alembic_namespace.get() or DEFAULT
