"""A stored JSON value that Python cannot decode, kept as a value instead of an exception.

Postgres accepts jsonb nested thousands of levels deep; Python's decoder gives
up near its recursion limit. Such a row (written by SQL, or before submits
checked nesting) must not take down whoever reads it: a worker fails that one
task, and inspection shows this stand-in.
"""

from __future__ import annotations


class UnreadableJson:
    """Stands where a jsonb value was that could not be decoded.

    Attributes:
        size: the value's length in bytes as the server sent it.
        reason: why it could not be decoded.
    """

    __slots__ = ("reason", "size")

    def __init__(self, size: int, reason: str) -> None:
        self.size, self.reason = size, reason

    def __repr__(self) -> str:
        return f"<unreadable JSON, {self.size} bytes: {self.reason}>"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, UnreadableJson) and (self.size, self.reason) == (
            other.size,
            other.reason,
        )

    def __hash__(self) -> int:
        return hash((self.size, self.reason))
