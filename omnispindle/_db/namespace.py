"""A queue's schema: its name, and the statements and channels made for it.

Every script and statement under ``sql/`` is written for the default schema,
``omnispindle``. A queue in another schema runs the same text with that name
replaced through ``psycopg.sql``: as a quoted identifier where the text names
the schema or a channel to LISTEN on, as a literal where it names a channel to
notify. Names are validated first (a lowercase identifier without quotes or
``$``), so the replacement cannot end a string or a function body early.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass

from psycopg import sql
from typing_extensions import LiteralString

from omnispindle._core import defaults, validation
from omnispindle._db.statements import Statement

SCHEMA_VARIABLE = "OMNISPINDLE_SCHEMA"
CHANNEL_KINDS = ("ready", "finished", "cancel", "stream", "probe")
_KINDS = "|".join(CHANNEL_KINDS)
# A channel notified by name ('omnispindle_ready'), a channel listened to
# (omnispindle_ready), or the schema itself (omnispindle.tasks, SCHEMA omnispindle).
_SLOT = re.compile(rf"'omnispindle_({_KINDS})'|\bomnispindle_({_KINDS})\b|\bomnispindle\b")


@dataclass(frozen=True, slots=True)
class Namespace:
    """The schema one queue lives in; every process of the queue names the same one.

    Raises:
        ValidationError: ``name`` is not a schema name a queue may use.
    """

    name: str = defaults.SCHEMA

    def __post_init__(self) -> None:
        validation.schema_name(self.name)

    @classmethod
    def chosen(cls, schema: str | None) -> Namespace:
        """``schema``, else ``$OMNISPINDLE_SCHEMA``, else ``omnispindle``.

        Raises:
            ValidationError: the name is not one a queue may use.
        """
        if schema is not None:
            return cls(schema)
        return cls(os.environ.get(SCHEMA_VARIABLE) or defaults.SCHEMA)

    @property
    def is_default(self) -> bool:
        """True for ``omnispindle``, whose statements run exactly as written."""
        return self.name == defaults.SCHEMA

    def text(self, statement: Statement) -> LiteralString:
        """The statement's text for this schema."""
        return self.render(statement.text)

    def render(self, text: LiteralString) -> LiteralString:
        """A script or statement written for ``omnispindle``, for this schema."""
        if self.is_default:
            return text
        return _rendered(self.name, text)

    def channel(self, default_channel: str) -> str:
        """This schema's name for a channel, given its default name (``omnispindle_ready``)."""
        kind = default_channel.removeprefix(f"{defaults.SCHEMA}_")
        if kind not in CHANNEL_KINDS:
            raise ValueError(f"unknown channel {default_channel!r}")
        return f"{self.name}_{kind}"


DEFAULT = Namespace()


@functools.lru_cache(maxsize=4096)
def _rendered(name: str, text: LiteralString) -> LiteralString:
    parts: list[sql.Composable] = []
    start = 0
    for slot in _SLOT.finditer(text):
        parts.append(sql.SQL(text[start : slot.start()]))
        parts.append(_filled(name, slot))
        start = slot.end()
    parts.append(sql.SQL(text[start:]))
    # Rendered once per schema and statement; psycopg quotes without a connection.
    return sql.Composed(parts).as_string(None)


def _filled(name: str, slot: re.Match[str]) -> sql.Composable:
    notified, listened = slot.group(1), slot.group(2)
    if notified:
        return sql.Literal(f"{name}_{notified}")
    if listened:
        return sql.Identifier(f"{name}_{listened}")
    return sql.Identifier(name)
