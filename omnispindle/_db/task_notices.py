"""Which tasks a notice names: a finished or stream notice's payload lists task ids.

A wait wakes only for a notice that names one of its tasks, or one that names
none: an empty payload (a reconnect, a statement finishing more tasks than a
payload holds, a schema from before payloads named tasks) or one it cannot
read means that any task may have changed.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

# Whether a wait's tasks are among the ids a notice names.
Wanted = Callable[[frozenset[int]], bool]


@functools.lru_cache(maxsize=8)
def named_tasks(payload: str) -> frozenset[int] | None:
    """The ids ``payload`` names, or None when it names none it can read. Cached:
    each of a process's waits is handed the same payload in turn."""
    try:
        return frozenset(int(part) for part in payload.split(",")) if payload else None
    except ValueError:
        return None


def concerns(payload: str, wanted: Wanted) -> bool:
    """Whether a notice with ``payload`` may concern the tasks ``wanted`` picks."""
    named = named_tasks(payload)
    return named is None or wanted(named)


def naming(task_id: int) -> Wanted:
    """What picks the notices naming ``task_id``."""
    return lambda named: task_id in named


def wake_for(wanted: Wanted, wake: Callable[[], object]) -> Callable[[str], None]:
    """A notice's callback (subscribed ``with_payload``) that calls ``wake`` for
    the notices that may concern the tasks ``wanted`` picks."""

    def heard(payload: str) -> None:
        if concerns(payload, wanted):
            wake()

    return heard
