"""Named SQL statements, read once from the ``sql/`` directory.

Python never builds SQL: a statement is a block of a ``.sql`` file under a
``-- name: x`` line, run with bound parameters (identifiers, where needed, go
through ``psycopg.sql.Identifier``). The runtime's statements are in
``sql/queries``; only the typed functions of :mod:`omnispindle._db.queries`
look them up by name.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from pathlib import Path

from typing_extensions import LiteralString

_NAME_LINE = re.compile(r"^-- name: (\w+)[ \t]*$", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class Statement:
    """One named statement: its name (for messages and tests) and its text."""

    name: str
    # The text of a file of this project, never of a caller: a literal in all but syntax.
    text: LiteralString


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
    """Split a file into its ``-- name: x`` blocks; comments stay in place.

    Raises:
        ValueError: a name is defined twice.
    """
    parts = _NAME_LINE.split(text)
    found: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in found:
            raise ValueError(f"SQL statement {name!r} is defined twice")
        found[name] = body.strip().rstrip(";").strip()
    return found


class Statements:
    """The named statements of every ``.sql`` file in one folder, read on first use.

    Args:
        folder: the folder, e.g. ``data_dir("sql") / "queries"``.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._found: dict[str, Statement] | None = None
        self._lock = threading.Lock()

    def __getitem__(self, name: str) -> Statement:
        """The statement called ``name``.

        Raises:
            KeyError: no statement has that name.
        """
        try:
            return self.all()[name]
        except KeyError:
            raise KeyError(f"no SQL statement named {name!r} in {self.folder.name}/") from None

    def all(self) -> dict[str, Statement]:
        """Every statement of the folder, keyed by name.

        Raises:
            ValueError: a name is defined twice, in one file or across files.
        """
        if self._found is None:
            with self._lock:
                if self._found is None:
                    self._found = _read(self.folder)
        return self._found


def _read(folder: Path) -> dict[str, Statement]:
    merged: dict[str, Statement] = {}
    for path in sorted(folder.glob("*.sql")):
        for name, body in parse_statements(path.read_text()).items():
            if name in merged:
                raise ValueError(f"SQL statement {name!r} is defined twice ({path.name})")
            merged[name] = Statement(name, body)
    return merged


RUNTIME = Statements(data_dir("sql") / "queries")


def script(relative_path: str) -> LiteralString:
    """Return a whole SQL script, e.g. ``schema.sql`` or ``migrations/0001_initial.sql``."""
    return (data_dir("sql") / relative_path).read_text()
