"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}
"""

from alembic import op

from omnispindle.schema import apply_migration

revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}
branch_labels = ${repr(branch_labels)}
depends_on = ${repr(depends_on)}


def upgrade() -> None:
    apply_migration(op.get_bind(), "${up_revision}")


def downgrade() -> None:
    apply_migration(op.get_bind(), "${up_revision}.down")
