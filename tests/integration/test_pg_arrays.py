"""Array literals read back by Postgres as the values they were built from."""

from __future__ import annotations

import uuid

import pytest

from omnispindle._db.pg_arrays import plain_array, text_array

AWKWARD = [
    "{}",
    '{"a": "q\\"uote"}',
    "back\\slash",
    "comma, {brace}",
    " spaced ",
    "NULL",
    "",
    '"',
    "ünïcødé",
]


@pytest.mark.parametrize("values", [[], AWKWARD, ["x"] * 3])
def test_text_arrays_round_trip(conn, values):
    assert conn.execute("SELECT %s::text[]", [text_array(values)]).fetchone()[0] == values


def test_json_documents_round_trip_as_jsonb(conn):
    docs = ['{"k": "v\\\\w"}', '[1, "two", null]', '"s\\"t"']
    got = conn.execute("SELECT %s::jsonb[]::text[]", [text_array(docs)]).fetchone()[0]
    assert got == ['{"k": "v\\\\w"}', '[1, "two", null]', '"s\\"t"']


def test_integers_and_uuids_round_trip(conn):
    ids, tokens = [1, 2**62, 7], [uuid.uuid4(), uuid.uuid4()]
    assert conn.execute("SELECT %s::bigint[]", [plain_array(ids)]).fetchone()[0] == ids
    assert conn.execute("SELECT %s::uuid[]", [plain_array(tokens)]).fetchone()[0] == tokens
    assert conn.execute("SELECT %s::bigint[]", [plain_array([])]).fetchone()[0] == []
