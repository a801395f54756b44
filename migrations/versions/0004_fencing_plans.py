"""Completions and failures look tasks up by primary key; claims can start from a cursor.

Revision ID: 0004_fencing_plans
Revises: 0003_speed
"""

from alembic import op

from omnispindle.schema import apply_migration

revision = "0004_fencing_plans"
down_revision = "0003_speed"
branch_labels = None
depends_on = None


def upgrade() -> None:
    apply_migration(op.get_bind(), "0004_fencing_plans")


def downgrade() -> None:
    apply_migration(op.get_bind(), "0004_fencing_plans.down")
