"""Dashboard: finished tasks per minute over the last hour, readable by observers.

Revision ID: 0008_dashboard
Revises: 0007_guarded_rows
"""

from alembic import op

from omnispindle.schema import apply_migration

revision = "0008_dashboard"
down_revision = "0007_guarded_rows"
branch_labels = None
depends_on = None


def upgrade() -> None:
    apply_migration(op.get_bind(), "0008_dashboard")


def downgrade() -> None:
    apply_migration(op.get_bind(), "0008_dashboard.down")
