"""The SQL of Omnispindle's migrations, for Alembic environments to execute.

Use it from your own Alembic history to install Omnispindle beside your
tables (then create queues with ``TaskQueue(..., migrate=False)``)::

    from alembic import op
    from omnispindle.schema import apply_migration

    def upgrade():
        apply_migration(op.get_bind(), "0001_initial")
        apply_migration(op.get_bind(), "0002_operations")
        apply_migration(op.get_bind(), "0003_speed")
        apply_migration(op.get_bind(), "0004_fencing_plans")
        apply_migration(op.get_bind(), "0005_lean_updates")

    def downgrade():
        apply_migration(op.get_bind(), "0005_lean_updates.down")
        apply_migration(op.get_bind(), "0004_fencing_plans.down")
        apply_migration(op.get_bind(), "0003_speed.down")
        apply_migration(op.get_bind(), "0002_operations.down")
        apply_migration(op.get_bind(), "0001_initial.down")
"""

from __future__ import annotations

from typing import Any

from omnispindle._db.pool import as_psycopg
from omnispindle._db.statements import script


def migration_sql(name: str) -> str:
    """Return the SQL script of migration ``name`` (e.g. ``"0001_initial"``)."""
    return script(f"migrations/{name}.sql")


def apply_migration(bind: Any, name: str) -> None:
    """Execute migration ``name`` on a SQLAlchemy connection, inside its transaction.

    The script runs through the psycopg connection itself, without
    SQLAlchemy's parameter parsing, so its ``%`` and ``:`` stay literal.
    """
    as_psycopg(bind).execute(migration_sql(name))
