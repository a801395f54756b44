"""Typed statements on periodic tasks (``sql/queries/periodic.sql``)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TypedDict

from omnispindle._db.query import Query, first, nothing, rows
from omnispindle._db.rows import DueSchedule, EnqueuedTick, SavedSchedule, ScheduleRow
from omnispindle._db.statements import RUNTIME


class ScheduleColumns(TypedDict):
    """A validated schedule, as ``omnispindle.periodic_tasks`` stores it."""

    name: str
    cron: str
    timezone: str  # IANA name
    task_type: str
    parameters: str  # a JSON object
    priority: int
    max_attempts: int
    retry_backoff: float
    timeout: float | None
    required_capabilities: list[str]
    enabled: bool


def upsert_periodic_task(schedule: ScheduleColumns) -> Query[SavedSchedule]:
    """Create or replace a schedule."""
    return Query(RUNTIME["upsert_periodic_task"], schedule, first)


def delete_periodic_task(name: str) -> Query[bool]:
    """Delete a schedule; False if there was none."""
    return Query(RUNTIME["delete_periodic_task"], {"name": name}, bool)


def list_periodic_tasks() -> Query[list[ScheduleRow]]:
    """Every schedule with its latest tick."""
    return Query(RUNTIME["list_periodic_tasks"], None, rows)


def enabled_schedules() -> Query[list[DueSchedule]]:
    """The enabled schedules, with the database's clock."""
    return Query(RUNTIME["enabled_schedules"], None, rows)


def enqueue_periodic_ticks(
    names: Sequence[str], ticks: Sequence[datetime]
) -> Query[list[EnqueuedTick]]:
    """Enqueue each schedule's tick unless another worker has; the ticks this call enqueued."""
    return Query(
        RUNTIME["enqueue_periodic_ticks"], {"names": list(names), "ticks": list(ticks)}, rows
    )


def prune_periodic_ticks() -> Query[None]:
    """Forget old ticks, keeping each schedule's latest."""
    return Query(RUNTIME["prune_periodic_ticks"], None, nothing)
