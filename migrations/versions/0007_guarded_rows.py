"""Guarded rows: no dependency deleted from under a waiting task, finite numbers, bounded leases.

Revision ID: 0007_guarded_rows
Revises: 0006_sql_entry_points
"""

from alembic import op

from omnispindle.schema import apply_migration

revision = "0007_guarded_rows"
down_revision = "0006_sql_entry_points"
branch_labels = None
depends_on = None


def upgrade() -> None:
    apply_migration(op.get_bind(), "0007_guarded_rows")


def downgrade() -> None:
    apply_migration(op.get_bind(), "0007_guarded_rows.down")
