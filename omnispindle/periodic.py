"""Periodic tasks: schedules stored in the database, ticks enqueued by every worker.

Any number of workers run :class:`PeriodicScheduler`; each computes the same
ticks from the same cron expression and the database's clock, and the
primary key of ``omnispindle.periodic_ticks`` lets exactly one of them
enqueue each tick. A tick missed while no worker ran is not made up, except
the latest one, which runs late (the way cron and Oban behave).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from . import validation
from .cron import CronExpression
from .errors import CronExpressionError, ValidationError

PRUNE_INTERVAL = 600.0


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
            now = row["now"]
            tick = cron.last_at_or_before(now)
            # A tick from before the schedule was saved belongs to no one.
            if tick is not None and tick >= row["updated_at"]:
                names.append(row["name"])
                ticks.append(tick)
            waits.append((cron.next_after(now) - now).total_seconds())
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
