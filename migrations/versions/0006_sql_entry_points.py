"""SQL entry points (enqueue, retry_task), defaults for a bare INSERT, liveness in the views.

Revision ID: 0006_sql_entry_points
Revises: 0005_lean_updates
"""

from alembic import op

from omnispindle.schema import apply_migration

revision = "0006_sql_entry_points"
down_revision = "0005_lean_updates"
branch_labels = None
depends_on = None


def upgrade() -> None:
    apply_migration(op.get_bind(), "0006_sql_entry_points")


def downgrade() -> None:
    apply_migration(op.get_bind(), "0006_sql_entry_points.down")
