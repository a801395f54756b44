"""The characters that reorder the text around them from right to left.

Embeddings, overrides, isolates and marks (U+202E and its kin): in text from
task data, one makes the rest of a line or a cell read reversed, so that
"report<U+202E>exe.txt" shows as another name. People's views show them as
``\\u202e`` instead.
"""

from __future__ import annotations

import re

# The body of a regex character class, for patterns that escape more than these.
CONTROLS = "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
_CONTROL = re.compile(f"[{CONTROLS}]")


def escaped(text: str) -> str:
    """The text with each bidirectional formatting character shown as ``\\uNNNN``."""
    return _CONTROL.sub(lambda match: f"\\u{ord(match[0]):04x}", text)
