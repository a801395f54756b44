"""The initial schema: tasks, workers, dependencies, triggers and views.

Revision ID: 0001_initial
Revises:
"""

from alembic import op

from omnispindle.schema import apply_migration

revision = "0001_initial"
down_revision = None
branch_labels = ("omnispindle",)
depends_on = None


def upgrade() -> None:
    apply_migration(op.get_bind(), "0001_initial")


def downgrade() -> None:
    apply_migration(op.get_bind(), "0001_initial.down")
