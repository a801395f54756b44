"""Text measured in terminal columns, for tables that line up.

A CJK or fullwidth character, and many emoji, take two columns on a terminal;
a combining mark takes none, sitting on the character before it. Measured in
characters, a task type in Japanese would push the rest of its row out of
line with the columns above it.
"""

from __future__ import annotations

import unicodedata

_WIDE = frozenset({"W", "F"})


def width(text: str) -> int:
    """The columns ``text`` takes on a terminal."""
    return sum(_columns(c) for c in text)


def pad(text: str, columns: int) -> str:
    """``text`` followed by spaces up to ``columns`` (as ``str.ljust``, in columns)."""
    return text + " " * max(columns - width(text), 0)


def cut(text: str, columns: int) -> str:
    """The longest start of ``text`` that fits in ``columns``."""
    used = 0
    for index, character in enumerate(text):
        used += _columns(character)
        if used > columns:
            return text[:index]
    return text


def _columns(character: str) -> int:
    if unicodedata.combining(character):
        return 0
    return 2 if unicodedata.east_asian_width(character) in _WIDE else 1
