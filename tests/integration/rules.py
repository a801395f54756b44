"""What the tests of the rules on a task row share: how a refusal looks, and what
a statement prepares of them."""

from __future__ import annotations

from collections.abc import Iterable

import psycopg
import pytest

from omnispindle._db.sqlstate import translate
from omnispindle.errors import ValidationError

# The node text of every CHECK constraint on tasks and of the WHEN clause of
# every row trigger that a statement of one kind fires: an insert (4) fires
# its triggers whatever it writes, an update (16) those that list none of
# their columns or one it writes. Postgres reads and prepares all of it again
# for every statement.
PREPARED = """
SELECT coalesce((SELECT sum(length(c.conbin::text)) FROM pg_constraint c
                 WHERE c.conrelid = 'omnispindle.tasks'::regclass AND c.contype = 'c'), 0)
     + coalesce((SELECT sum(length(t.tgqual::text)) FROM pg_trigger t
                 WHERE t.tgrelid = 'omnispindle.tasks'::regclass AND NOT t.tgisinternal
                   AND t.tgtype & 1 = 1 AND t.tgtype & %(event)s = %(event)s
                   AND (%(event)s = 4
                        OR cardinality(t.tgattr::int2[]) = 0
                        OR EXISTS (SELECT FROM pg_attribute a
                                   WHERE a.attrelid = t.tgrelid
                                     AND a.attnum = ANY (t.tgattr::int2[])
                                     AND a.attname = ANY (%(columns)s::text[])))), 0)
"""
INSERT, UPDATE = 4, 16


def prepared(conn: psycopg.Connection, event: int, columns: Iterable[str] = ()) -> int:
    """Characters of node text an insert, or an update writing ``columns``, prepares."""
    found = conn.execute(PREPARED, {"event": event, "columns": sorted(columns)}).fetchone()
    return found[0]


def refused(conn: psycopg.Connection, statement: str) -> psycopg.Error:
    with pytest.raises(psycopg.errors.CheckViolation) as raised:
        conn.execute(statement)
    return raised.value


def assert_named(error: psycopg.Error, rule: str) -> None:
    """Refused as a CHECK constraint refuses: by name, with its message."""
    assert error.diag.constraint_name == rule
    assert error.diag.table_name == "tasks"
    assert error.diag.schema_name == "omnispindle"
    assert error.diag.message_primary == (
        f'new row for relation "tasks" violates check constraint "{rule}"'
    )
    translated = translate(error)
    assert isinstance(translated, ValidationError) and rule in str(translated)
