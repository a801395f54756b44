"""Scheduling by task type: limits on running tasks and starts per second, aging, the scaling hint.

Revision ID: 0010_scheduling
Revises: 0009_pause
"""

from alembic import op

from omnispindle.schema import apply_migration

revision = "0010_scheduling"
down_revision = "0009_pause"
branch_labels = None
depends_on = None


def upgrade() -> None:
    apply_migration(op.get_bind(), "0010_scheduling")


def downgrade() -> None:
    apply_migration(op.get_bind(), "0010_scheduling.down")
