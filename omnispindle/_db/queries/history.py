"""Typed statements of history (``sql/queries/history.sql``).

An archive batch is one transaction: ``try_lock_pruning``,
``lock_prunable_tasks`` (with the archive horizon), then ``archive_finished``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from omnispindle._db.query import Query, column, value
from omnispindle._db.statements import RUNTIME


def cover_history(
    oldest: datetime | None, width_seconds: float, keep_seconds: float | None
) -> Query[int]:
    """Make partitions from ``oldest`` (None: only ahead; never past the
    retention ``keep_seconds``) to a width past now."""
    return Query(
        RUNTIME["cover_history"],
        {"oldest": oldest, "width_seconds": width_seconds, "keep_seconds": keep_seconds},
        value("made"),
    )


def archive_finished(*, retry_window_seconds: float, ids: Sequence[int]) -> Query[list[int]]:
    """Move the locked tasks no dependent still needs into the history; the ids
    moved. A failed dependent needs its parents for ``retry_window_seconds``."""
    return Query(
        RUNTIME["archive_finished"],
        {"retry_window_seconds": retry_window_seconds, "ids": list(ids)},
        column("id"),
    )


def drop_history(keep_seconds: float) -> Query[int]:
    """Drop the partitions whose every task finished more than ``keep_seconds`` ago."""
    return Query(RUNTIME["drop_history"], {"keep_seconds": keep_seconds}, value("dropped"))


def history_bytes() -> Query[int]:
    """The history's size now: its partitions with their indexes."""
    return Query(RUNTIME["history_bytes"], None, value("bytes"))
