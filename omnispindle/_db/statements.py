"""Named SQL statements and scripts, read once from the ``sql/`` directory.

Python never builds SQL: every statement is looked up here by name and run
with bound parameters (identifiers, where needed, go through
``psycopg.sql.Identifier``).
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

_NAME_LINE = re.compile(r"^-- name: (\w+)[ \t]*$", re.MULTILINE)


def data_dir(kind: str) -> Path:
    """Return the directory of ``sql`` or ``migrations`` files.

    An installed wheel carries them inside the package; a checkout keeps them
    beside it.
    """
    package = Path(__file__).resolve().parent.parent
    packaged = package / "_data" / kind
    if packaged.is_dir():
        return packaged
    return package.parent / kind


def parse_statements(text: str) -> dict[str, str]:
    """Split a file into its ``-- name: x`` blocks; comments stay in place."""
    parts = _NAME_LINE.split(text)
    found: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2]):
        if name in found:
            raise ValueError(f"SQL statement {name!r} is defined twice")
        found[name] = body.strip().rstrip(";").strip()
    return found


@cache
def statements() -> dict[str, str]:
    """Every named statement under ``sql/queries``, keyed by name."""
    merged: dict[str, str] = {}
    sql = data_dir("sql")
    for path in sorted([*(sql / "queries").glob("*.sql"), *(sql / "bench").glob("*.sql")]):
        for name, body in parse_statements(path.read_text()).items():
            if name in merged:
                raise ValueError(f"SQL statement {name!r} is defined twice ({path.name})")
            merged[name] = body
    return merged


def query(name: str) -> str:
    """Return the statement called ``name``.

    Raises:
        KeyError: no statement has that name.
    """
    try:
        return statements()[name]
    except KeyError:
        raise KeyError(f"no SQL statement named {name!r} in sql/queries") from None


def script(relative_path: str) -> str:
    """Return a whole SQL script, e.g. ``schema.sql`` or ``migrations/0001_initial.sql``."""
    return (data_dir("sql") / relative_path).read_text()
