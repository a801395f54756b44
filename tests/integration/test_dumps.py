"""A database that holds the queue, copied with pg_dump and restored elsewhere:
the copy runs as the original did."""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
from pathlib import Path

import psycopg
import pytest

from omnispindle import TaskQueue
from omnispindle._db.schema_state import head_revision
from omnispindle._maintenance import retention, rollup
from omnispindle.migrate import stamp, upgrade

from .test_history import archive_all, in_table, partitions
from .test_retention import existing, finished_tasks, make_old


def client_tools(dsn: str) -> Path:
    """A directory with pg_dump and psql that can dump the server of ``dsn``: of its
    major version or later (the embedded server is newer than the system's tools,
    and ships its own); the test is skipped without one."""
    with psycopg.connect(dsn) as conn:
        server_major = conn.info.server_version // 10000
    found = shutil.which("pg_dump")
    candidates = [Path(found).parent] if found else []
    with contextlib.suppress(ImportError, AttributeError):
        import pgserver.postgres_server

        candidates.append(Path(pgserver.postgres_server.POSTGRES_BIN_PATH))
    for directory in candidates:
        if (directory / "psql").exists() and _major(directory / "pg_dump") >= server_major:
            return directory
    pytest.skip(f"no pg_dump and psql of PostgreSQL {server_major} or later")


def _major(tool: Path) -> int:
    """The major version of a PostgreSQL client tool, 0 when it cannot say."""
    try:
        said = subprocess.run(
            [str(tool), "--version"], capture_output=True, text=True, timeout=30
        ).stdout
    except OSError:
        return 0
    version = re.search(r"(\d+)(?:\.\d+)?", said)
    return int(version.group(1)) if version else 0


def copy_database(source: str, target: str, *options: str, stop_on_error: bool = True) -> None:
    """pg_dump ``source`` (plain format, with ``options``) and load it into ``target``
    (past a failed statement too, unless ``stop_on_error``)."""
    tools = client_tools(source)
    dump = subprocess.run(
        [str(tools / "pg_dump"), "--no-owner", *options, "--dbname", source],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    subprocess.run(
        [
            str(tools / "psql"),
            "--quiet",
            "--no-psqlrc",
            "-v",
            f"ON_ERROR_STOP={int(stop_on_error)}",
            "--dbname",
            target,
        ],
        input=dump,
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    "options",
    [["--schema-only"], ["--exclude-table-data", "omnispindle.*"]],
    ids=["schema-only", "no-queue-data"],
)
def test_a_copy_without_the_queue_data_stamped_at_head_prunes_and_counts(dsn, empty_dsn, options):
    """pg_dump --schema-only (or without the queue's rows) leaves out the revision
    too: `omnispindle migrate` asks for --stamp, after which the sweeper's passes
    run as on a migrated database."""
    copy_database(dsn, empty_dsn, *options)
    stamp(empty_dsn, head_revision())
    queue = TaskQueue(dsn=empty_dsn, migrate=False)
    try:
        with psycopg.connect(empty_dsn, autocommit=True) as conn:
            old = finished_tasks(conn, 3)
            assert retention.prune_batch(queue.db, 3600, 100) == 3
            assert existing(conn, old) == []
            assert rollup.roll_up(queue.db) is not None
    finally:
        queue.shutdown()


def test_a_data_only_copy_into_a_migrated_database_archives_again(dsn, queue, empty_dsn):
    """pg_dump --data-only into a migrated database copies history_partitions'
    rows but not the partitions (their tables are not in a data-only dump, and
    COPY into them fails): the archive makes the partitions again, instead of
    failing with 'no partition of relation "task_history" found for row' at
    every pass."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        archived = finished_tasks(conn, 2)
        assert archive_all(queue) == 2
        assert partitions(conn)
    upgrade(empty_dsn)
    copy_database(dsn, empty_dsn, "--data-only", stop_on_error=False)
    copy = TaskQueue(dsn=empty_dsn, migrate=False)
    try:
        with psycopg.connect(empty_dsn, autocommit=True) as conn:
            assert partitions(conn)  # recorded, yet no table of them came
            later = finished_tasks(conn, 2)
            make_old(conn, later)
            assert archive_all(copy) == 2
            assert in_table(conn, "task_history", later) == later
            assert in_table(conn, "tasks", archived + later) == []
    finally:
        copy.shutdown()
