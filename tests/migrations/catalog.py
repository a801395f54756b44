"""A comparable snapshot of one schema's catalog entries.

Two databases hold the same schema when their snapshots are equal. Each part
is a sorted list of tuples, so a failing equality assert shows the entries
that differ. The table named ``excluded`` (Alembic's version table) is left
out together with its constraints and indexes.
"""

from __future__ import annotations

from typing import Any

import psycopg

COLUMNS = """
SELECT c.relname,
       row_number() OVER (PARTITION BY c.oid ORDER BY a.attnum) AS position,
       a.attname,
       format_type(a.atttypid, a.atttypmod) AS type,
       a.attnotnull,
       pg_get_expr(d.adbin, d.adrelid) AS default_expression,
       a.attidentity,
       a.attgenerated
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE n.nspname = %(schema)s AND c.relname <> %(excluded)s
  AND c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped
"""

CONSTRAINTS = """
SELECT c.relname, k.conname, k.contype, pg_get_constraintdef(k.oid) AS definition
FROM pg_constraint k
JOIN pg_class c ON c.oid = k.conrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %(schema)s AND c.relname <> %(excluded)s
"""

INDEXES = """
SELECT c.relname, i.relname AS index_name, pg_get_indexdef(x.indexrelid) AS definition
FROM pg_index x
JOIN pg_class c ON c.oid = x.indrelid
JOIN pg_class i ON i.oid = x.indexrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %(schema)s AND c.relname <> %(excluded)s
"""

RELOPTIONS = """
SELECT c.relname, c.relkind, coalesce(c.reloptions, '{}') AS reloptions
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %(schema)s AND c.relname <> %(excluded)s
  AND c.relkind IN ('r', 'p', 'v', 'm')
"""

SEQUENCES = """
SELECT c.relname, format_type(s.seqtypid, NULL) AS type, s.seqstart, s.seqincrement,
       s.seqmin, s.seqmax, s.seqcache, s.seqcycle
FROM pg_sequence s
JOIN pg_class c ON c.oid = s.seqrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %(schema)s
"""

ENUMS = """
SELECT t.typname, array_agg(e.enumlabel::text ORDER BY e.enumsortorder) AS labels
FROM pg_type t
JOIN pg_enum e ON e.enumtypid = t.oid
JOIN pg_namespace n ON n.oid = t.typnamespace
WHERE n.nspname = %(schema)s
GROUP BY t.typname
"""

FUNCTIONS = """
SELECT p.proname, pg_get_function_identity_arguments(p.oid) AS arguments,
       pg_get_functiondef(p.oid) AS definition
FROM pg_proc p
JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = %(schema)s AND p.prokind IN ('f', 'p')
"""

TRIGGERS = """
SELECT c.relname, t.tgname, pg_get_triggerdef(t.oid) AS definition
FROM pg_trigger t
JOIN pg_class c ON c.oid = t.tgrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %(schema)s AND NOT t.tgisinternal
"""

VIEWS = """
SELECT c.relname, c.relkind, pg_get_viewdef(c.oid) AS definition
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %(schema)s AND c.relkind IN ('v', 'm')
"""

# Who may do what: each function's, relation's and column's privileges, in a
# sorted list, so that the order in which grants were made does not count. An
# object with no ACL of its own holds its kind's default, so that an explicit
# grant of the default to its owner counts the same.
ACLS = """
SELECT 'function' AS kind,
       p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')' AS name,
       ARRAY(SELECT a::text FROM unnest(coalesce(p.proacl, acldefault('f'::"char", p.proowner))) a
             ORDER BY 1) AS acl
FROM pg_proc p
JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = %(schema)s
UNION ALL
SELECT 'relation', c.relname,
       ARRAY(SELECT a::text
             FROM unnest(coalesce(
                 c.relacl,
                 acldefault((CASE c.relkind WHEN 'S' THEN 's' ELSE 'r' END)::"char", c.relowner))) a
             ORDER BY 1)
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %(schema)s AND c.relname <> %(excluded)s
  AND c.relkind IN ('r', 'p', 'v', 'm', 'S')
UNION ALL
SELECT 'column', c.relname || '.' || a.attname,
       ARRAY(SELECT x::text FROM unnest(a.attacl) x ORDER BY 1)
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %(schema)s AND c.relname <> %(excluded)s AND a.attacl IS NOT NULL
"""

PARTS = {
    "columns": COLUMNS,
    "constraints": CONSTRAINTS,
    "indexes": INDEXES,
    "reloptions": RELOPTIONS,
    "sequences": SEQUENCES,
    "enums": ENUMS,
    "functions": FUNCTIONS,
    "triggers": TRIGGERS,
    "views": VIEWS,
    "acls": ACLS,
}


def snapshot(
    dsn: str, schema: str = "omnispindle", excluded: str = "alembic_version"
) -> dict[str, list[tuple[Any, ...]]]:
    """Return every part of the catalog of ``schema`` as sorted lists of tuples."""
    params = {"schema": schema, "excluded": excluded}
    with psycopg.connect(dsn, autocommit=True) as conn:
        return {part: _rows(conn, statement, params) for part, statement in PARTS.items()}


def _rows(
    conn: psycopg.Connection, statement: str, params: dict[str, str]
) -> list[tuple[Any, ...]]:
    rows = conn.execute(statement, params).fetchall()
    return sorted((tuple(_hashable(value) for value in row) for row in rows), key=repr)


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value
