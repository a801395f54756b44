"""Delayed tasks, idempotency keys, trace context, periodic tasks, metrics views.

Revision ID: 0002_operations
Revises: 0001_initial
"""

from alembic import op

from omnispindle.schema import apply_migration

revision = "0002_operations"
down_revision = "0001_initial"
branch_labels = None
depends_on = None


def upgrade() -> None:
    apply_migration(op.get_bind(), "0002_operations")


def downgrade() -> None:
    apply_migration(op.get_bind(), "0002_operations.down")
