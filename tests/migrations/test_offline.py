"""A user's own Alembic history in offline mode (``alembic upgrade head --sql``),
which writes the SQL out instead of running it: apply_migration cannot run a
script there and says what to write instead, migration_sql's scripts."""

from __future__ import annotations

import io
from pathlib import Path

import psycopg
import pytest
from alembic import command
from alembic.config import Config

from omnispindle import ConfigurationError, SchemaOutdatedError, TaskQueue
from omnispindle._db.schema_state import head_revision
from omnispindle.migrate import stamp
from tests.migrations.catalog import snapshot
from tests.migrations.test_migrations import build_from_script

OFFLINE_ENV_PY = """
from alembic import context

context.configure(
    url="postgresql+psycopg://",
    literal_binds=True,
    dialect_opts={"paramstyle": "named"},
    transactional_ddl=True,
)
with context.begin_transaction():
    context.run_migrations()
"""

REVISION_PY = """
from alembic import op

from omnispindle.schema import apply_migration, migration_names, migration_sql

revision = "app_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    for name in migration_names():
        {apply}
"""

APPLIED = "apply_migration(op.get_bind(), name)"
WRITTEN_OUT = "op.execute(migration_sql(name))"


def offline_upgrade(root: Path, apply: str) -> str:
    """The SQL ``alembic upgrade head --sql`` writes for a history applying the
    migrations with ``apply``."""
    location = root / "alembic"
    (location / "versions").mkdir(parents=True)
    (location / "env.py").write_text(OFFLINE_ENV_PY)
    (location / "versions" / "app_0001.py").write_text(REVISION_PY.format(apply=apply))
    output = io.StringIO()
    config = Config(output_buffer=output)
    config.set_main_option("script_location", str(location))
    command.upgrade(config, "head", sql=True)
    return output.getvalue()


def test_apply_migration_in_offline_mode_says_what_to_write_instead(tmp_path):
    with pytest.raises(ConfigurationError) as raised:
        offline_upgrade(tmp_path, APPLIED)
    message = str(raised.value)
    assert "offline mode (--sql)" in message
    assert "op.execute(migration_sql('0001_initial', schema=...))" in message


def test_migration_sql_written_out_offline_builds_the_schema(tmp_path, server_dsn, empty_dsn):
    script = offline_upgrade(tmp_path, WRITTEN_OUT)
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        conn.execute(script)
    assert snapshot(empty_dsn) == build_from_script(server_dsn, "schema.sql")
    with pytest.raises(SchemaOutdatedError, match="--stamp REVISION"):
        TaskQueue(empty_dsn)
    stamp(empty_dsn, head_revision())
    TaskQueue(empty_dsn).shutdown()
