"""A claim whose plan is kept per connection; completions and the next claim in one statement.

Revision ID: 0003_speed
Revises: 0002_operations
"""

from alembic import op

from omnispindle.schema import apply_migration

revision = "0003_speed"
down_revision = "0002_operations"
branch_labels = None
depends_on = None


def upgrade() -> None:
    apply_migration(op.get_bind(), "0003_speed")


def downgrade() -> None:
    apply_migration(op.get_bind(), "0003_speed.down")
