"""A database that holds the queue, copied with pg_dump and restored elsewhere:
the copy runs as the original did."""

from __future__ import annotations

import shutil
import subprocess

import psycopg
import pytest

from omnispindle import TaskQueue
from omnispindle._db.schema_state import head_revision
from omnispindle._maintenance import retention, rollup
from omnispindle.migrate import stamp, upgrade

from .test_history import archive_all, in_table, partitions
from .test_retention import existing, finished_tasks, make_old

needs_pg_dump = pytest.mark.skipif(
    not (shutil.which("pg_dump") and shutil.which("psql")), reason="pg_dump and psql not on PATH"
)


def copy_database(source: str, target: str, *options: str, stop_on_error: bool = True) -> None:
    """pg_dump ``source`` (plain format, with ``options``) and load it into ``target``
    (past a failed statement too, unless ``stop_on_error``)."""
    dump = subprocess.run(
        ["pg_dump", "--no-owner", *options, "--dbname", source],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    subprocess.run(
        [
            "psql",
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


@needs_pg_dump
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


@needs_pg_dump
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
