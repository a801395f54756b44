"""Plain-text and JSON rendering for the command line."""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from omnispindle._core import bidi
from omnispindle.cli.columns import cut, pad, width

ELLIPSIS = "..."
# Control characters other than tab and newline: task data is anyone's text,
# and an escape sequence or a carriage return would garble the terminal. So
# would the bidirectional embeddings, overrides and isolates, reordering the
# rest of a line on the screen ("report\u202eexe.txt" shows as another name).
_CONTROL = re.compile(rf"[\x00-\x08\x0b-\x1f\x7f-\x9f{bidi.CONTROLS}]")
# In a table cell or a one-line message a newline or a tab would end the line
# or shift its columns: a task type could then pass for a row of its own.
_LINE_BREAKING = str.maketrans({"\n": "\\n", "\t": "\\t"})


def format_table(rows: Sequence[Mapping[str, Any]], title: str) -> str:
    """Render rows as a plain aligned text table under a title."""
    if not rows:
        return f"{title}: none"
    headers = list(rows[0])
    cells = [[cell(row[h]) for h in headers] for row in rows]
    widths = [max(width(h), *(width(c[i]) for c in cells)) for i, h in enumerate(headers)]
    lines = [
        title,
        "  ".join(pad(h, w) for h, w in zip(headers, widths)),
        "  ".join("-" * w for w in widths),
    ]
    lines += ["  ".join(pad(c, w) for c, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def cell(value: Any) -> str:
    """One table cell: ``-`` for nothing, one decimal for floats, lists joined by commas,
    control characters, newlines and tabs escaped."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}"
    text = ",".join(map(str, value)) if isinstance(value, list) else str(value)
    return one_line(text)


def one_line(text: str) -> str:
    """The text on one line: control characters, newlines and tabs escaped."""
    return printable(text).translate(_LINE_BREAKING)


def printable(text: str) -> str:
    """The text with control characters other than tab and newline shown as ``\\xNN``,
    and bidirectional formatting characters as ``\\uNNNN``."""
    return _CONTROL.sub(_escaped, text)


def _escaped(match: re.Match[str]) -> str:
    code = ord(match[0])
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def format_fields(pairs: Iterable[tuple[str, Any]], indent: str = "  ") -> str:
    """Render ``(label, value)`` pairs as aligned ``label  value`` lines."""
    pairs = list(pairs)
    widest = max((width(label) for label, _ in pairs), default=0)
    return "\n".join(
        f"{indent}{pad(label, widest)}  {cell(value)}".rstrip() for label, value in pairs
    )


def shorten(text: str | None, columns: int = 60) -> str | None:
    """One line of at most ``columns`` terminal columns: whitespace runs collapsed,
    the rest cut."""
    if text is None:
        return None
    line = printable(" ".join(text.split()))
    if width(line) <= columns:
        return line
    return cut(line, max(columns - len(ELLIPSIS), 0)) + ELLIPSIS


def format_age(seconds: float | None) -> str | None:
    """A duration for people, at most two units: ``42s``, ``3m05s``, ``2h10m``, ``4d03h``."""
    if seconds is None:
        return None
    whole = max(int(seconds), 0)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def to_json(value: Any) -> str:
    """JSON for scripts: timestamps in ISO 8601, ids such as UUIDs as strings."""
    return json.dumps(value, default=_json_default, indent=2)


def _json_default(value: Any) -> Any:
    if isinstance(value, (datetime.datetime, datetime.date)):
        return value.isoformat()
    return str(value)
