"""Typed statements of the outcome rollup (``sql/queries/rollup.sql``).

A pass is one transaction: ``lock_rollup``, ``count_outcomes`` (when its span
is not empty), ``advance_rollup``, then ``trim_outcome_minutes``.
"""

from __future__ import annotations

from datetime import datetime

from omnispindle._db.query import Query, first_or_none, nothing, value
from omnispindle._db.rows import RollupSpan
from omnispindle._db.statements import RUNTIME


def lock_rollup(settle_seconds: float) -> Query[RollupSpan | None]:
    """Lock the watermark and read the span to count; None while another pass holds it."""
    return Query(RUNTIME["lock_rollup"], {"settle_seconds": settle_seconds}, first_or_none)


def count_outcomes(since: datetime, until: datetime) -> Query[int]:
    """Add the tasks finished in [since, until) to outcome_minutes; how many there were."""
    return Query(RUNTIME["count_outcomes"], {"since": since, "until": until}, value("tasks"))


def advance_rollup(until: datetime) -> Query[None]:
    """Move the watermark forward to ``until``."""
    return Query(RUNTIME["advance_rollup"], {"until": until}, nothing)


def trim_outcome_minutes(keep_seconds: float) -> Query[None]:
    """Delete the minutes older than ``keep_seconds``."""
    return Query(RUNTIME["trim_outcome_minutes"], {"keep_seconds": keep_seconds}, nothing)
