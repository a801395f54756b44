"""Typed statements of clients waiting for tasks (``sql/queries/waiting.sql``).

Ids are named compactly (see ``_client.records.id_params``): ``ids`` one by one,
and runs of consecutive ids as ranges ``lo[i]..hi[i]``, sent in binary.
"""

from __future__ import annotations

from collections.abc import Sequence

from omnispindle._db.query import Query, column, value
from omnispindle._db.statements import RUNTIME

_task_ids = column("task_id")


def missing_task_ids(ids: Sequence[int], lo: Sequence[int], hi: Sequence[int]) -> Query[list[int]]:
    """The named ids that have no task."""
    return Query(
        RUNTIME["missing_task_ids"], {"ids": list(ids), "lo": list(lo), "hi": list(hi)}, _task_ids
    )


def finished_task_ids(ids: Sequence[int], lo: Sequence[int], hi: Sequence[int]) -> Query[list[int]]:
    """The named ids whose task has finished."""
    return Query(
        RUNTIME["finished_task_ids"], {"ids": list(ids), "lo": list(lo), "hi": list(hi)}, _task_ids
    )


def wal_position() -> Query[str]:
    """Where the primary's WAL ends now (a ``pg_lsn``, as text)."""
    return Query(RUNTIME["wal_position"], None, value("position"))


def replayed_to(position: str) -> Query[bool]:
    """Whether the server shows every change up to ``position`` (of :func:`wal_position`)."""
    return Query(RUNTIME["replayed_to"], {"position": position}, value("replayed"))
