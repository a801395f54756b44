"""Chain links cost less: generic plans for completions, no notice for children claimed at once,
the rules on columns that claims never write checked by triggers that only their writers prepare;
a batch linked within itself goes in as one document.

Revision ID: 0012_chain_steps
Revises: 0011_history
"""

from alembic import op

from omnispindle.schema import apply_migration

revision = "0012_chain_steps"
down_revision = "0011_history"
branch_labels = None
depends_on = None


def upgrade() -> None:
    apply_migration(op.get_bind(), "0012_chain_steps")


def downgrade() -> None:
    apply_migration(op.get_bind(), "0012_chain_steps.down")
