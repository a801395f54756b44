"""Every client operation, written once for the blocking and the asyncio client.

Each function checks its arguments (raising before anything is sent) and
returns an operation of :mod:`omnispindle._db.query`: the blocking client
runs it with ``Database.run``, the asyncio client with ``AsyncDatabase.run``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from uuid import UUID

from omnispindle._client import _submission as submission
from omnispindle._client.records import (
    DEFAULT_CANCEL_REASON,
    CancelOutcome,
    RetryOutcome,
    cancel_outcome,
    retry_outcome,
    task_record,
)
from omnispindle._core import defaults, validation
from omnispindle._core.cron import CronExpression
from omnispindle._core.schedules import Schedule
from omnispindle._core.specs import TaskSpec
from omnispindle._db import queries as q
from omnispindle._db.query import Atomic, Pipelined, Plan, Query, then
from omnispindle._db.rows import (
    PausedTaskType,
    SavedSchedule,
    ScheduleRow,
    ScheduleSummary,
    StreamRow,
    TaskRecord,
    TaskTypeLimit,
    TaskTypeStrategy,
    TypeDemand,
)
from omnispindle.errors import TaskNotFoundError, ValidationError

TraceContext = submission.TraceContext


def submit(
    specs: list[TaskSpec], trace_context: TraceContext, key: UUID | None = None
) -> Query[list[int]]:
    """Insert validated tasks, recorded under the submit call's ``key``; the new ids, in order."""
    return submission.insert(specs, trace_context, key)


def submit_chunks(
    chunks: Iterator[list[TaskSpec]], trace_context: TraceContext, key: UUID | None = None
) -> Pipelined[list[int], list[int]]:
    """Insert a long plain batch in pipelined chunks, all or nothing, recorded under
    ``key``; the new ids, in order."""
    return submission.insert_chunks(chunks, trace_context, key)


def get_task(task_id: int) -> Query[TaskRecord]:
    """A task's current record.

    Raises:
        ValidationError: ``task_id`` is not a positive int.
        TaskNotFoundError: (when run) no task has this id.
    """
    task_id = validation.task_id(task_id)

    def only(records: list[TaskRecord]) -> TaskRecord:
        if not records:
            raise TaskNotFoundError(f"no task with id {task_id}")
        return task_record(records[0])

    return then(q.tasks.get_tasks([task_id]), only)


def cancel_task(task_id: int, reason: str | None) -> Query[CancelOutcome]:
    """Cancel a task and its dependents.

    Raises:
        ValidationError: a bad id or reason.
        TaskNotFoundError: (when run) no task has this id.
    """
    task_id = validation.task_id(task_id)
    query = q.tasks.cancel_task(task_id, _reason(reason))
    return then(query, lambda done: cancel_outcome(task_id, done["state"], done["changed"]))


def cancel_tasks(task_ids: Iterable[int], reason: str | None) -> Atomic[list[CancelOutcome]]:
    """Cancel tasks in one transaction; an unknown id rolls everything back."""
    ids = list(dict.fromkeys(validation.task_id(i) for i in task_ids))
    return Atomic(_cancel_each(ids, _reason(reason)))


def _cancel_each(ids: list[int], reason: str) -> Plan[list[CancelOutcome]]:
    outcomes: dict[int, CancelOutcome] = {}
    # Newest first: dependents are nearly always newer than what they depend
    # on, so a listed dependent gets the given reason rather than the
    # "dependency N cancelled" of a listed ancestor's cascade.
    for task_id in sorted(ids, reverse=True):
        done = yield q.tasks.cancel_task(task_id, reason)
        outcomes[task_id] = cancel_outcome(task_id, done["state"], done["changed"])
    return [outcomes[task_id] for task_id in ids]


def _reason(reason: object) -> str:
    return validation.cancel_reason(reason) or DEFAULT_CANCEL_REASON


def retry_tasks(
    task_ids: Iterable[int], with_dependents: bool = False
) -> Query[list[RetryOutcome]]:
    """Put failed tasks back to pending, each with an attempt left, all or nothing; with
    ``with_dependents``, also the dependents their failures cancelled.

    Every task is locked and checked before any changes, so one unknown or
    unfailed task leaves all of them as they were.

    Raises:
        ValidationError: an id is not a task id, or ``with_dependents`` not a bool.
        TaskNotFoundError: (when run) an id does not exist.
        TaskStateError: (when run) a task is not failed, or its key is held.
    """
    ids = list(dict.fromkeys(validation.task_id(i) for i in task_ids))
    query = q.inspection.retry_tasks(ids, validation.flag("with_dependents", with_dependents))
    return then(query, lambda retried: [retry_outcome(row) for row in retried])


def pause_task_type(task_type: str, reason: str | None) -> Query[bool]:
    """Stop workers claiming tasks of ``task_type``; False if it was paused already.

    Raises:
        ValidationError: a bad task type or reason.
    """
    return q.pausing.pause_task_type(
        validation.task_type(task_type), validation.cancel_reason(reason)
    )


def resume_task_type(task_type: str) -> Query[bool]:
    """Let workers claim tasks of ``task_type`` again; False if it was not paused.

    Raises:
        ValidationError: a bad task type.
    """
    return q.pausing.resume_task_type(validation.task_type(task_type))


def paused_task_types() -> Query[list[PausedTaskType]]:
    """Every paused task type, by name, with when and why it was paused."""
    return q.pausing.paused_task_types()


# The bounds task_type_limits checks; checked here first, so a bad value raises
# before anything is sent.
LIMIT_RANGE = (1, 1_000_000)
# Starts per second: below 1e-9 a bucket's refill could underflow in the claim.
RATE_RANGE = (1e-9, 1_000_000.0)


def set_task_type_limit(
    task_type: str,
    max_running: int | None,
    starts_per_second: float | None,
    burst: int | None,
    max_running_per_group: int | None = None,
    starts_per_second_per_group: float | None = None,
) -> Query[None]:
    """Set (or replace) the limits of ``task_type``.

    Raises:
        ValidationError: a bad task type or limit, no limit at all, or a burst
            without a rate (and, from the database, a limit per group on a type
            without the fair strategy).
    """
    checked = validation.task_type(task_type)
    limits = (max_running, starts_per_second, max_running_per_group, starts_per_second_per_group)
    if all(limit is None for limit in limits):
        raise ValidationError(
            "give max_running, max_running_per_group, starts_per_second, "
            "starts_per_second_per_group or several (clear_task_type_limit removes a limit)"
        )
    if burst is not None and starts_per_second is None:
        raise ValidationError("burst needs starts_per_second")
    return q.type_limits.set_task_type_limit(
        checked,
        _count("max_running", max_running),
        _rate(starts_per_second),
        _count("burst", burst),
        _count("max_running_per_group", max_running_per_group),
        _rate(starts_per_second_per_group, "starts_per_second_per_group"),
    )


def _count(name: str, given: int | None) -> int | None:
    return None if given is None else validation.int_in_range(name, given, LIMIT_RANGE)


def _rate(given: float | None, name: str = "starts_per_second") -> float | None:
    rate = validation.optional_positive_number(name, given)
    if rate is not None and not RATE_RANGE[0] <= rate <= RATE_RANGE[1]:
        raise ValidationError(f"{name} must be from 1e-9 to {RATE_RANGE[1]:,.0f}, got {given}")
    return rate


def clear_task_type_limit(task_type: str) -> Query[bool]:
    """Remove the limits of ``task_type``; False if it had none.

    Raises:
        ValidationError: a bad task type.
    """
    return q.type_limits.clear_task_type_limit(validation.task_type(task_type))


STRATEGIES = ("priority", "aging", "fair")
# What task_type_strategies accepts: a shorter step would overflow the effective priority.
AGING_RANGE = (0.001, 1_000_000.0)


def set_task_type_strategy(
    task_type: str, strategy: str, aging_seconds: float | None
) -> Query[None]:
    """Set how workers order the ready tasks of ``task_type``.

    Raises:
        ValidationError: a bad task type, an unknown strategy, or ``aging_seconds``
            missing for 'aging', given for another, or outside ``AGING_RANGE``.
    """
    checked = validation.task_type(task_type)
    if strategy not in STRATEGIES:
        raise ValidationError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    if (strategy == "aging") != (aging_seconds is not None):
        raise ValidationError("aging_seconds goes with the aging strategy, and only with it")
    seconds = validation.optional_positive_number("aging_seconds", aging_seconds)
    if seconds is not None and not AGING_RANGE[0] <= seconds <= AGING_RANGE[1]:
        raise ValidationError(f"aging_seconds must be from 0.001 to 1,000,000, got {seconds}")
    return q.type_limits.set_task_type_strategy(checked, strategy, seconds)


def task_type_strategies() -> Query[list[TaskTypeStrategy]]:
    """Every task type with a strategy other than strict priority, by name."""
    return q.type_limits.task_type_strategies()


def task_type_limits() -> Query[list[TaskTypeLimit]]:
    """Every limited task type, by name, with what holds it now."""
    return q.type_limits.task_type_limits()


def save_schedule(schedule: Schedule) -> Query[SavedSchedule]:
    """Create or replace a periodic schedule."""
    task = schedule.task
    return q.periodic.upsert_periodic_task(
        {
            "name": schedule.name,
            "cron": schedule.cron.text,
            "timezone": schedule.cron.zone,
            "task_type": task.task_type,
            "parameters": task.parameters_json,
            "priority": task.priority,
            "max_attempts": task.max_attempts,
            "retry_backoff": task.retry_backoff,
            "timeout": task.timeout,
            "required_capabilities": list(task.required_capabilities),
            "enabled": schedule.enabled,
        }
    )


def remove_schedule(name: str) -> Query[bool]:
    """Delete a periodic schedule; False if there was none."""
    return q.periodic.delete_periodic_task(name)


def list_schedules() -> Query[list[ScheduleSummary]]:
    """Every periodic schedule, with its latest tick and task, and its next tick."""
    return then(q.periodic.list_periodic_tasks(), _with_next_ticks)


def _with_next_ticks(schedules: list[ScheduleRow]) -> list[ScheduleSummary]:
    now = datetime.now(timezone.utc)
    return [{**row, "next_tick_at": next_tick(row, now)} for row in schedules]


def next_tick(row: ScheduleRow, now: datetime) -> datetime | None:
    """When an enabled schedule fires next (None when disabled, or edited into nonsense)."""
    if not row["enabled"]:
        return None
    try:
        return CronExpression.parse(row["cron"], row["timezone"]).next_after(now)
    except ValidationError:  # CronExpressionError too
        return None


def stream_step(task_id: int, after: int) -> Plan[tuple[TaskRecord, list[StreamRow]]]:
    """A task's record, then its partials after ``after``.

    The state is read first, so when it shows finished, every partial emitted
    before the end is already readable: none is missed.

    Raises:
        TaskNotFoundError: (when run) no task has this id.
    """
    task = yield get_task(task_id)
    partials = yield q.tasks.read_stream(task_id, after)
    return task, partials


MAX_WORKERS = 100_000  # what workers_needed accepts


def workers_needed(
    concurrency: int, min_workers: int, max_workers: int, task_types: Iterable[str] | None
) -> Query[int]:
    """The worker processes a deployment should run now (see ``omnispindle.workers_needed``).

    Raises:
        ValidationError: a bad concurrency, bounds out of order, or a bad task type.
    """
    checked = validation.int_in_range("concurrency", concurrency, defaults.CONCURRENCY_RANGE)
    low = validation.int_in_range("min_workers", min_workers, (0, MAX_WORKERS))
    high = validation.int_in_range("max_workers", max_workers, (low, MAX_WORKERS))
    types = None if task_types is None else list(validation.names("task_types", task_types))
    return q.demand.workers_needed(checked, low, high, types)


def worker_demand() -> Query[list[TypeDemand]]:
    """Each task type with unfinished tasks, and how many could run at once now."""
    return q.demand.worker_demand()
