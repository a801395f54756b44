"""Released migrations never change, they form one chain, and a current database is only read.

``migrations/released.sha256`` holds the hash of every file of every released
migration (its SQL, up and down, and its Alembic revision); a new migration
joins it when it is released.
"""

from __future__ import annotations

import hashlib
import re

import psycopg
import pytest
from alembic.script import ScriptDirectory

from omnispindle import TaskQueue
from omnispindle._db import migrations, schema_state
from omnispindle.schema import migration_names
from tests.conftest import ROOT

MANIFEST = ROOT / "migrations" / "released.sha256"
_LINE = re.compile(r"^([0-9a-f]{64})  (\S+)$")


def released() -> dict[str, str]:
    """Released file -> its hash, from the manifest."""
    found = {}
    for line in MANIFEST.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        match = _LINE.match(line)
        assert match, f"not a sha256sum line: {line!r}"
        found[match[2]] = match[1]
    return found


def migration_files(name: str) -> list[str]:
    return [
        f"sql/migrations/{name}.sql",
        f"sql/migrations/{name}.down.sql",
        f"migrations/versions/{name}.py",
    ]


def test_no_released_migration_file_has_changed():
    for path, digest in released().items():
        text = (ROOT / path).read_bytes()
        assert hashlib.sha256(text).hexdigest() == digest, (
            f"{path} belongs to a released migration and must not change: add a new migration"
        )


def test_released_migrations_are_whole_and_come_before_any_unreleased_one():
    frozen = released()
    names = migration_names()
    states = [all(f in frozen for f in migration_files(n)) for n in names]
    known = {f for n in names for f in migration_files(n)}
    assert set(frozen) <= known, f"the manifest names files of no migration: {set(frozen) - known}"
    for name, is_released in zip(names, states, strict=True):
        partly = any(f in frozen for f in migration_files(name))
        assert partly == is_released, f"{name} is released only in part"
    assert states == sorted(states, reverse=True), "a released migration follows an unreleased one"
    assert states[0], "the first migration is released"


def test_every_migration_has_its_sql_both_ways_and_one_revision():
    names = migration_names()
    for name in names:
        for path in migration_files(name):
            assert (ROOT / path).is_file(), f"{path} is missing"
    revisions = sorted(p.stem for p in (ROOT / "migrations" / "versions").glob("*.py"))
    assert revisions == list(names)


def test_the_revisions_form_one_chain_in_the_order_of_their_names():
    script = ScriptDirectory.from_config(migrations.alembic_config())
    chain = [r.revision for r in reversed(list(script.walk_revisions()))]
    assert chain == list(migration_names())
    assert script.get_current_head() == schema_state.head_revision()


def test_migration_names_can_stop_at_a_release():
    names = migration_names()
    assert migration_names(through=names[0]) == names[:1]
    assert migration_names(through=names[-1]) == names
    with pytest.raises(ValueError, match="no migration named"):
        migration_names(through="9999_nothing")


def test_a_current_database_is_only_read_when_a_queue_starts(dsn, record_statements, monkeypatch):
    def refuse(*_args: object) -> None:
        raise AssertionError("Alembic ran on a database already at the latest revision")

    monkeypatch.setattr(migrations, "upgrade", refuse)
    statements = record_statements()
    TaskQueue(dsn, migrate=True).shutdown()
    assert statements.names == ["schema_installed", "version_table_exists", "schema_version"]


def test_a_database_behind_is_migrated_when_a_queue_starts(empty_dsn):
    assert schema_state.recorded_revision(empty_dsn) is None
    TaskQueue(empty_dsn, migrate=True).shutdown()
    assert schema_state.recorded_revision(empty_dsn) == schema_state.head_revision()
    with psycopg.connect(empty_dsn) as conn:
        assert conn.execute("SELECT to_regclass('omnispindle.tasks')").fetchone()[0]
