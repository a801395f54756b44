"""Typed statements of retention (``sql/queries/retention.sql``).

A prune batch is one transaction: ``try_lock_pruning`` (or ``lock_pruning``),
``lock_prunable_tasks``, then ``prune_finished``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from omnispindle._core import defaults
from omnispindle._db.query import Query, column, nothing, rows, value
from omnispindle._db.rows import PrunableTask
from omnispindle._db.statements import RUNTIME


def try_lock_pruning() -> Query[bool]:
    """Take the one pruner's lock for this transaction if it is free."""
    return Query(RUNTIME["try_lock_pruning"], None, value("acquired"))


def lock_pruning() -> Query[None]:
    """Take the one pruner's lock for this transaction, waiting for it."""
    return Query(
        RUNTIME["lock_pruning"], {"timeout_ms": int(defaults.LOCK_TIMEOUT * 1000)}, nothing
    )


def lock_prunable_tasks(
    *, keep_seconds: float, limit: int, after: datetime | None
) -> Query[list[PrunableTask]]:
    """Lock up to ``limit`` of the oldest prunable tasks, from ``after`` (None: the oldest)."""
    return Query(
        RUNTIME["lock_prunable_tasks"],
        {"keep_seconds": keep_seconds, "limit": limit, "after": after},
        rows,
    )


def prune_finished(*, keep_seconds: float, ids: Sequence[int]) -> Query[list[int]]:
    """Delete the locked tasks no dependent still needs; the ids deleted."""
    return Query(
        RUNTIME["prune_finished"], {"keep_seconds": keep_seconds, "ids": list(ids)}, column("id")
    )


def count_prunable_tasks(keep_seconds: float) -> Query[int]:
    """How many tasks a prune with this horizon would delete now."""
    return Query(RUNTIME["count_prunable_tasks"], {"keep_seconds": keep_seconds}, value("prunable"))
