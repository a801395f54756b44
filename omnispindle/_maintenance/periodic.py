"""Periodic tasks: schedules stored in the database, ticks enqueued by every worker.

Any number of workers run :class:`PeriodicScheduler`; each computes the same
ticks from the same cron expression and the database's clock, and the
primary key of ``omnispindle.periodic_ticks`` lets exactly one of them
enqueue each tick. Ticks missed for up to a minute (a slow pass, a brief
outage) are enqueued late; after a longer gap only the latest one is.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from omnispindle._core import validation
from omnispindle._core.cron import CronExpression
from omnispindle.errors import CronExpressionError, ValidationError

PRUNE_INTERVAL = 600.0
CATCH_UP = 60.0  # seconds of missed ticks that are still enqueued
MAX_CATCH_UP_TICKS = 60


def schedule_params(name: Any, cron: Any, task_type: Any, parameters: Any, *, priority: Any,
                    max_retries: Any, timeout: Any, retry_backoff: Any,
                    required_capabilities: Any, enabled: Any) -> dict[str, Any]:
    """Validate a schedule and return the ``upsert_periodic_task`` parameters.

    Raises:
        ValidationError: a bad argument (CronExpressionError for the cron expression).
    """
    if not isinstance(name, str) or not name or len(name) > validation.MAX_KEY_LENGTH:
        raise ValidationError(f"a periodic task's name must be a non-empty string of at most "
                              f"{validation.MAX_KEY_LENGTH} characters, got {name!r}")
    expression = CronExpression.parse(cron)
    spec = validation.task_spec(task_type, parameters, priority, None, max_retries, timeout,
                                retry_backoff, required_capabilities)
    if not isinstance(enabled, bool):
        raise ValidationError(f"enabled must be True or False, got {enabled!r}")
    return {"name": name, "cron": expression.text, "task_type": spec.task_type,
            "parameters": spec.parameters_json, "priority": spec.priority,
            "max_attempts": spec.max_attempts, "retry_backoff": spec.retry_backoff,
            "timeout": spec.timeout, "required_capabilities": list(spec.required_capabilities),
            "enabled": enabled}


def due_ticks(cron: CronExpression, now: datetime, saved_at: datetime,
              last_tick: datetime | None) -> list[datetime]:
    """The ticks to enqueue now, newest first.

    Every tick since the last one enqueued, within the last CATCH_UP seconds
    (a slow pass or a brief outage loses none); after a longer gap only the
    latest. Never a tick from before the schedule was saved.
    """
    ticks: list[datetime] = []
    tick = cron.last_at_or_before(now)
    while (tick is not None and tick >= saved_at and (last_tick is None or tick > last_tick)
           and len(ticks) < MAX_CATCH_UP_TICKS
           and (not ticks or tick > now - timedelta(seconds=CATCH_UP))):
        ticks.append(tick)
        tick = cron.last_at_or_before(tick - timedelta(seconds=1))
    return ticks


@dataclass(frozen=True)
class SchedulePass:
    """What one scheduler pass did, and when the next tick of any schedule is due."""

    enqueued: int
    next_tick_in: float | None  # seconds; None without schedules


class PeriodicScheduler:
    """Enqueues the due ticks of every enabled schedule, once each across all workers."""

    def __init__(self, db: Any) -> None:
        self.db = db
        self._parsed: dict[str, CronExpression | None] = {}
        self._next_prune = 0.0

    def run_once(self) -> SchedulePass:
        """Enqueue each schedule's latest due tick (if no one has yet)."""
        names, ticks, waits = [], [], []
        for row in self.db.fetch("enabled_schedules"):
            cron = self._expression(row["cron"])
            if cron is None:
                continue
            for tick in due_ticks(cron, row["now"], row["updated_at"], row["last_tick_at"]):
                names.append(row["name"])
                ticks.append(tick)
            waits.append((cron.next_after(row["now"]) - row["now"]).total_seconds())
        enqueued = self.db.fetch("enqueue_periodic_ticks", {"names": names, "ticks": ticks}) if names else []
        self._prune_if_due()
        return SchedulePass(len(enqueued), min(waits) if waits else None)

    def _expression(self, text: str) -> CronExpression | None:
        """Parsed once per text; an expression edited into nonsense by hand is skipped."""
        if text not in self._parsed:
            try:
                self._parsed[text] = CronExpression.parse(text)
            except CronExpressionError:
                self._parsed[text] = None
        return self._parsed[text]

    def _prune_if_due(self) -> None:
        now = time.monotonic()
        if now >= self._next_prune:
            self.db.fetch("prune_periodic_ticks")
            self._next_prune = now + PRUNE_INTERVAL
