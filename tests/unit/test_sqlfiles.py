"""Named SQL files, and the rule that Python modules carry no SQL text."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import omnispindle
from omnispindle._db import statements as sqlfiles
from omnispindle._db.notifier import CHANNELS, PROBE_CHANNEL
from omnispindle.bench.queries import BENCH

PACKAGE_DIR = Path(omnispindle.__file__).parent

# Upper-case SQL anywhere in a string, the way the project's SQL is written.
UPPER_SQL = re.compile(
    r"\bSELECT\b.*?\bFROM\b|\bINSERT\s+INTO\b|\bUPDATE\s+[\w.\"]+\s+SET\b|\bDELETE\s+FROM\b"
    r"|\b(?:CREATE|ALTER|DROP|TRUNCATE)\s+(?:TABLE|SCHEMA|INDEX|FUNCTION|TRIGGER|TYPE|VIEW"
    r"|DATABASE)\b",
    re.DOTALL,
)
# A string that starts as a statement, in any case.
LEADING_SQL = re.compile(
    r"^\s*(?:select\s+(?:\*|[\w.()*]+(?:\s*,\s*[\w.()*]+)*)\s+from\s"
    r"|insert\s+into\b|update\s+[\w.\"]+\s+set\b|delete\s+from\b|with\s+\w+\s+as\s*\()",
    re.DOTALL | re.IGNORECASE,
)

TWO_BLOCKS = """\
-- Header comment before the first block is not a statement.

-- name: first
-- A comment inside the block stays.
SELECT 1;

-- name: second
UPDATE t SET x = 1
WHERE y = 2;;
"""


def test_parse_statements_splits_named_blocks():
    found = sqlfiles.parse_statements(TWO_BLOCKS)
    assert found == {
        "first": "-- A comment inside the block stays.\nSELECT 1",
        "second": "UPDATE t SET x = 1\nWHERE y = 2",
    }


def test_parse_statements_rejects_a_duplicate_name():
    with pytest.raises(ValueError, match="'first'"):
        sqlfiles.parse_statements(TWO_BLOCKS + "\n-- name: first\nSELECT 2;\n")


def test_parse_statements_ignores_text_without_names():
    assert sqlfiles.parse_statements("-- only a comment\nSELECT 1;\n") == {}


def test_every_named_statement_has_sql():
    found = sqlfiles.RUNTIME.all()
    assert "submit_tasks" in found
    for name, statement in found.items():
        assert statement.name == name
        code = [line for line in statement.text.splitlines() if not line.strip().startswith("--")]
        assert "".join(code).strip(), f"statement {name!r} is empty"


def test_unknown_statement_name_raises_key_error():
    with pytest.raises(KeyError, match="no_such_statement"):
        sqlfiles.RUNTIME["no_such_statement"]


def statement_keys(source: str, registry: str) -> list[str]:
    """The literal names looked up as ``registry["name"]`` in the source."""
    return [
        node.slice.value
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Subscript)
        and isinstance(node.value, ast.Name)
        and node.value.id == registry
        and isinstance(node.slice, ast.Constant)
    ]


def test_only_the_typed_query_functions_name_runtime_statements():
    seam = PACKAGE_DIR / "_db" / "queries"
    for path in PACKAGE_DIR.rglob("*.py"):
        if path.parent != seam and path != PACKAGE_DIR / "_db" / "statements.py":
            assert not re.search(r"\bRUNTIME\b", path.read_text()), (
                f"{path.name} names runtime statements"
            )


def test_every_runtime_statement_has_exactly_one_typed_function():
    used = [
        name
        for path in (PACKAGE_DIR / "_db" / "queries").glob("*.py")
        for name in statement_keys(path.read_text(), "RUNTIME")
    ]
    listens = [
        f"listen_{channel.removeprefix('omnispindle_')}" for channel in (*CHANNELS, PROBE_CHANNEL)
    ]
    assert sorted(used + listens) == sorted(sqlfiles.RUNTIME.all())


def test_bench_and_test_statements_stay_out_of_the_runtime_ones():
    runtime = set(sqlfiles.RUNTIME.all())
    assert not runtime & set(BENCH.all())
    assert not runtime & {"create_database", "drop_database"}
    used = statement_keys((PACKAGE_DIR / "bench" / "queries.py").read_text(), "BENCH")
    assert used and set(used) <= set(BENCH.all())


def docstring_nodes(tree: ast.AST) -> set[int]:
    """The ids of the module, class and function docstring nodes."""
    kinds = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, kinds) and node.body and isinstance(node.body[0], ast.Expr):
            value = node.body[0].value
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                found.add(id(value))
    return found


def string_literals(source: str) -> list[str]:
    """Every string literal of the source except docstrings; f-strings with ``{}`` holes."""
    tree = ast.parse(source)
    skipped = docstring_nodes(tree)
    texts = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            texts.append(
                "".join(
                    part.value if isinstance(part, ast.Constant) else "{}" for part in node.values
                )
            )
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in skipped
        ):
            texts.append(node.value)
    return texts


def sql_in(source: str) -> list[str]:
    return [
        text
        for text in string_literals(source)
        if UPPER_SQL.search(text) or LEADING_SQL.search(text)
    ]


@pytest.mark.parametrize(
    "snippet",
    [
        'cur.execute("SELECT 1 FROM omnispindle.tasks")',
        'conn.execute("select id from omnispindle.tasks where id = %s", [1])',
        'q = f"UPDATE omnispindle.tasks SET state = {state!r}"',
        'q = ("DELETE FROM omnispindle.workers "\n     "WHERE id = %s")',
        'q = "INSERT INTO omnispindle.tasks (task_type) VALUES (%s)"',
        'q = "CREATE TABLE x (id int)"',
    ],
)
def test_the_sql_check_finds_sql_in_code(snippet):
    assert sql_in(snippet)


def test_the_sql_check_ignores_docstrings_and_prose():
    snippet = '''
def f():
    """Runs SELECT id FROM omnispindle.tasks for you."""
    raise ValueError("select a task from the list, then update it")
'''
    assert sql_in(snippet) == []


@pytest.mark.parametrize(
    "path", sorted(PACKAGE_DIR.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE_DIR))
)
def test_no_module_contains_sql(path):
    assert sql_in(path.read_text(encoding="utf-8")) == []
