"""The statements of a queue in a schema of its own: every mention of the
default schema and its channels replaced, quoted by psycopg."""

from __future__ import annotations

import re

import pytest

from omnispindle._db.namespace import DEFAULT, Namespace
from omnispindle._db.schema_state import migration_names
from omnispindle._db.statements import RUNTIME, script
from omnispindle.errors import ValidationError

SCRIPTS = ["schema.sql"] + [
    f"migrations/{name}{suffix}.sql" for name in migration_names() for suffix in ("", ".down")
]


def test_the_default_schema_runs_every_statement_as_written():
    for statement in RUNTIME.all().values():
        assert DEFAULT.text(statement) is statement.text


@pytest.mark.parametrize("path", SCRIPTS)
def test_no_mention_of_the_default_schema_is_left_in_another_schemas_script(path):
    rendered = Namespace("billing").render(script(path))
    assert not re.search(r"\bomnispindle(\b|_(ready|finished|cancel|stream)\b)", rendered)
    assert '"billing".tasks' in rendered or path.endswith(".down.sql")


def test_statements_name_the_schema_and_its_channels():
    billing = Namespace("billing")
    assert billing.text(RUNTIME["listen_ready"]) == 'LISTEN "billing_ready"'
    assert "to_regclass('\"billing\".tasks')" in billing.text(RUNTIME["schema_installed"])
    body = billing.render(script("schema.sql"))
    assert "pg_notify('billing_ready'" in body
    assert 'CREATE SCHEMA IF NOT EXISTS "billing";' in body
    assert billing.channel("omnispindle_cancel") == "billing_cancel"


def test_a_name_outside_the_rules_is_a_typed_error():
    for name in ('a"b', "a'b", "a b", "a$$b", "Upper", "1st", "pg_x", "public", "x" * 55):
        with pytest.raises(ValidationError):
            Namespace(name)
    assert Namespace("facturación").channel("omnispindle_ready") == "facturación_ready"


def test_the_schema_comes_from_the_argument_then_the_environment(monkeypatch):
    monkeypatch.delenv("OMNISPINDLE_SCHEMA", raising=False)
    assert Namespace.chosen(None) == DEFAULT
    monkeypatch.setenv("OMNISPINDLE_SCHEMA", "shipping")
    assert Namespace.chosen(None).name == "shipping"
    assert Namespace.chosen("billing").name == "billing"
    with pytest.raises(ValidationError):
        Namespace.chosen("")
