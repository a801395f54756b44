"""Claims and completions cost Postgres less per task.

Revision ID: 0005_lean_updates
Revises: 0004_fencing_plans
"""

from alembic import op

from omnispindle.schema import apply_migration

revision = "0005_lean_updates"
down_revision = "0004_fencing_plans"
branch_labels = None
depends_on = None


def upgrade() -> None:
    apply_migration(op.get_bind(), "0005_lean_updates")


def downgrade() -> None:
    apply_migration(op.get_bind(), "0005_lean_updates.down")
