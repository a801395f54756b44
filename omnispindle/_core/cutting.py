"""How much of a long list a person is shown: its newest entries within a budget."""

from __future__ import annotations

from collections.abc import Sequence


def newest_within(sizes: Sequence[int], most: int) -> int:
    """How many of the last entries, of these sizes, fit together within ``most``;
    at least one of a list that has any, which its reader cuts when alone over."""
    total = count = 0
    for size in reversed(sizes):
        if count and total + size > most:
            break
        total += size
        count += 1
    return count
