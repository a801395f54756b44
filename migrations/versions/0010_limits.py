"""Limits on a task type: running tasks at once and starts per second.

Revision ID: 0010_limits
Revises: 0009_pause
"""

from alembic import op

from omnispindle.schema import apply_migration

revision = "0010_limits"
down_revision = "0009_pause"
branch_labels = None
depends_on = None


def upgrade() -> None:
    apply_migration(op.get_bind(), "0010_limits")


def downgrade() -> None:
    apply_migration(op.get_bind(), "0010_limits.down")
