"""Omnispindle inside an application's own Alembic history, and commands that never
migrate on their own (issue 20, findings 1 and 2)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from omnispindle import (
    AsyncTaskQueueClient,
    SchemaMissingError,
    SchemaOutdatedError,
    TaskQueue,
    TaskQueueClient,
    ValidationError,
    WorkerClient,
)
from omnispindle._db.schema_state import head_revision, migration_names
from omnispindle.migrate import stamp
from omnispindle.schema import apply_migration

from ..docs.test_code_blocks import as_url

BIN = Path(sys.executable).parent
DEADLINE = 120

APP_REVISION = '''"""The application's first revision: its own table, and Omnispindle beside it."""

import sqlalchemy as sa
from alembic import op

from omnispindle.schema import apply_migration, migration_names

revision = "app_0001"
down_revision = None
branch_labels = None
depends_on = None

APPLIES = migration_names(through="{head}")


def upgrade():
    op.create_table(
        "invoices",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("total", sa.Numeric, nullable=False),
    )
    for name in APPLIES:
        apply_migration(op.get_bind(), name)


def downgrade():
    for name in reversed(APPLIES):
        apply_migration(op.get_bind(), f"{{name}}.down")
    op.drop_table("invoices")
'''

EXECUTORS = """
EXECUTORS = {"invoice": lambda task: {"total": sum(task["parameters"]["lines"])}}
"""


def run(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=DEADLINE, check=False
    )


def omnispindle(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return run(str(BIN / "omnispindle"), *args, cwd=cwd, env=clean_env())


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("OMNISPINDLE_DSN", "PYTHONPATH")}


@pytest.fixture
def app(tmp_path: Path, empty_dsn: str) -> Path:
    """An application with its own Alembic project, upgraded to head."""
    done = run(str(BIN / "alembic"), "init", "alembic", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    url = as_url(empty_dsn).replace("postgresql://", "postgresql+psycopg://", 1)
    ini = tmp_path / "alembic.ini"
    ini.write_text(
        "\n".join(
            f"sqlalchemy.url = {url.replace('%', '%%')}"
            if line.startswith("sqlalchemy.url")
            else line
            for line in ini.read_text().splitlines()
        )
    )
    versions = tmp_path / "alembic" / "versions"
    (versions / "app_0001.py").write_text(APP_REVISION.format(head=head_revision()))
    (tmp_path / "mytasks.py").write_text(EXECUTORS)
    done = run(str(BIN / "alembic"), "upgrade", "head", cwd=tmp_path, env=clean_env())
    assert done.returncode == 0, done.stderr
    return tmp_path


def test_every_command_and_client_works_on_a_schema_the_apps_history_installed(app, empty_dsn):
    """Finding 1: status, worker and sweep exited 1 with ``type "task_state" already exists``."""
    with psycopg.connect(empty_dsn) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchone()[0] == "app_0001"
        assert conn.execute("SELECT count(*) FROM invoices").fetchone()[0] == 0
    for args in (["status"], ["sweep", "--once"], ["tasks"], ["migrate"]):
        done = omnispindle(*args, "--dsn", empty_dsn, cwd=app)
        assert done.returncode == 0, f"{args}: {done.stderr}"
    with TaskQueueClient(dsn=empty_dsn) as client:
        task_id = client.submit_task("invoice", {"lines": [3, 4]})
        worker = subprocess.Popen(
            [str(BIN / "omnispindle"), "worker", "--dsn", empty_dsn, "--executors", "mytasks"],
            cwd=app,
            env=clean_env(),
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert client.wait_for_task(task_id, timeout=DEADLINE)["result"] == {"total": 7}
        finally:
            worker.terminate()
            _, err = worker.communicate(timeout=DEADLINE)
        assert worker.returncode == 0, err
    assert asyncio.run(_state_seen_by_the_async_client(empty_dsn, task_id)) == "succeeded"
    shown = omnispindle("tasks", str(task_id), "--json", "--dsn", empty_dsn, cwd=app)
    assert json.loads(shown.stdout)["state"] == "succeeded"
    done = run(str(BIN / "alembic"), "downgrade", "base", cwd=app, env=clean_env())
    assert done.returncode == 0, done.stderr


async def _state_seen_by_the_async_client(dsn: str, task_id: int) -> str:
    async with AsyncTaskQueueClient(dsn=dsn) as client:
        return (await client.get_task(task_id))["state"]


def omnispindle_schema_exists(dsn: str) -> bool:
    with psycopg.connect(dsn) as conn:
        found = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = 'omnispindle'")
        return found.fetchone() is not None


NO_SCHEMA = (
    "omnispindle: the database has no omnispindle schema: run `omnispindle migrate "
    "--dsn ...` (or open a TaskQueue with migrate=True)"
)
READ_OR_RUN = [
    ["status"],
    ["status", "--json"],
    ["tasks"],
    ["tasks", "1"],
    ["wait", "1", "--timeout", "1"],
    ["retry", "1"],
    ["cancel", "1"],
    ["metrics", "--once"],
    ["prune", "--older-than", "1d"],
    ["sweep", "--once"],
    ["worker", "--executors", "mytasks"],
]


@pytest.mark.parametrize("args", READ_OR_RUN, ids=" ".join)
def test_no_command_but_migrate_installs_the_schema(args, empty_dsn, tmp_path):
    """Finding 2: ``omnispindle status`` on an empty database installed the whole schema."""
    (tmp_path / "mytasks.py").write_text(EXECUTORS)
    done = omnispindle(*args, "--dsn", empty_dsn, cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines() == [NO_SCHEMA]
    assert not omnispindle_schema_exists(empty_dsn)


def test_no_client_installs_the_schema(empty_dsn):
    """Finding 2: ``TaskQueueClient(dsn=...)`` installed the whole schema."""
    opens = [
        lambda: TaskQueueClient(dsn=empty_dsn),
        lambda: WorkerClient(dsn=empty_dsn),
        lambda: TaskQueue(empty_dsn),
        lambda: TaskQueue(empty_dsn, migrate=False),
        lambda: asyncio.run(AsyncTaskQueueClient(dsn=empty_dsn).open()),
    ]
    for open_one in opens:
        with pytest.raises(SchemaMissingError, match="omnispindle migrate"):
            open_one()
    assert not omnispindle_schema_exists(empty_dsn)


def test_migrate_true_and_the_migrate_command_do_install_it(empty_dsn, tmp_path):
    TaskQueue(empty_dsn, migrate=True).shutdown()
    assert omnispindle_schema_exists(empty_dsn)
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        conn.execute("DROP SCHEMA omnispindle CASCADE")
    done = omnispindle("migrate", "--dsn", empty_dsn, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    TaskQueue(empty_dsn).shutdown()


def apply(dsn: str, names: tuple[str, ...] | list[str]) -> None:
    with psycopg.connect(dsn) as conn:
        for name in names:
            apply_migration(conn, name)


def test_an_older_embedded_schema_is_refused_with_what_to_run(empty_dsn, tmp_path):
    older = migration_names()[:-1]
    apply(empty_dsn, older)
    with pytest.raises(SchemaOutdatedError, match=f"at {older[-1]} and this version needs"):
        TaskQueueClient(dsn=empty_dsn)
    done = omnispindle("status", "--dsn", empty_dsn, cwd=tmp_path)
    assert done.returncode == 1
    assert "run `omnispindle migrate --dsn ...`" in done.stderr
    done = omnispindle("migrate", "--dsn", empty_dsn, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    TaskQueueClient(dsn=empty_dsn).close()


def test_a_schema_without_a_recorded_revision_is_stamped_not_reinstalled(empty_dsn):
    """What an earlier apply_migration left: the schema, and no revision anywhere."""
    apply(empty_dsn, migration_names())
    with psycopg.connect(empty_dsn) as conn:
        conn.execute("DROP TABLE omnispindle.alembic_version")
    for attempt in (lambda: TaskQueue(empty_dsn), lambda: TaskQueue(empty_dsn, migrate=True)):
        with pytest.raises(SchemaOutdatedError, match="--stamp REVISION"):
            attempt()
    stamp(empty_dsn, head_revision())
    TaskQueue(empty_dsn).shutdown()


@pytest.mark.parametrize("name", ["0099_nothing", "../queries/setup", "0001_initial.down.down"])
def test_apply_migration_refuses_an_unknown_name_before_running_anything(empty_dsn, name):
    with pytest.raises(ValidationError, match=f"no migration named {name!r}; they are 0001_"):
        apply(empty_dsn, [name])
    assert not omnispindle_schema_exists(empty_dsn)
