"""Finished tasks move to a history partitioned by when they finished; retention drops partitions.

Revision ID: 0011_history
Revises: 0010_scheduling
"""

from alembic import op

from omnispindle.schema import apply_migration

revision = "0011_history"
down_revision = "0010_scheduling"
branch_labels = None
depends_on = None


def upgrade() -> None:
    apply_migration(op.get_bind(), "0011_history")


def downgrade() -> None:
    apply_migration(op.get_bind(), "0011_history.down")
