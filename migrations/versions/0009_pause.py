"""Pausing a task type: its pending tasks wait until it is resumed.

Revision ID: 0009_pause
Revises: 0008_dashboard
"""

from alembic import op

from omnispindle.schema import apply_migration

revision = "0009_pause"
down_revision = "0008_dashboard"
branch_labels = None
depends_on = None


def upgrade() -> None:
    apply_migration(op.get_bind(), "0009_pause")


def downgrade() -> None:
    apply_migration(op.get_bind(), "0009_pause.down")
