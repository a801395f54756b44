"""The rows the runtime statements return, as typed dicts.

A typed dict is the dict psycopg builds, so reading a row costs nothing more;
the names and types here are those of the statements' select lists in
``sql/queries``. Rows handed to users (task records, worker lists, metrics)
are documented on the public methods that return them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypedDict
from uuid import UUID

# A jsonb value as psycopg decodes it: a dict, a list, a string, a number, a bool or None.
Json = Any


class _Claimed(TypedDict):
    """What every claim returns of a task it claimed, with its parents' outcomes."""

    id: int
    task_type: str
    parameters: dict[str, Json]
    attempts: int
    max_attempts: int
    timeout_seconds: float | None
    dependency_results: dict[str, Json] | None
    dependency_failures: dict[str, Json] | None
    trace_context: dict[str, str] | None


class ClaimedTask(_Claimed):
    """A task claimed by ``claim_tasks``."""

    lease_token: UUID


class StepRow(_Claimed):
    """A row of a worker's step (``complete_and_claim``): a claim, or a result that
    could not be stored (``dropped``: the lease was gone)."""

    lease_token: str  # text: the worker only hands it back
    priority: int
    dropped: bool


class StoredOutcome(TypedDict):
    """An attempt's stored end; ``retry_in``: seconds until a retried task is due."""

    id: int
    state: str


class FailedAttempt(TypedDict):
    """A failed attempt's stored end; ``retry_in`` is None unless the task will run again."""

    id: int
    state: str
    retry_in: float | None


class HeldLease(TypedDict):
    """A lease a heartbeat extended, and whether its task has been asked to stop."""

    id: int
    cancel_requested: bool


class ProcessBacklog(TypedDict):
    """A supervisor's view of its worker processes: the ready tasks they could
    claim (counted up to a limit), the tasks they run, and the pids of those
    running any."""

    ready: int
    running: int
    busy_pids: list[int]


class TaskRecord(TypedDict):
    """A task as clients return it (``get_tasks``)."""

    task_id: int
    task_type: str
    parameters: dict[str, Json]
    priority: int
    state: str
    attempts: int
    max_attempts: int
    result: Json
    error: dict[str, Json] | None
    cancel_reason: str | None
    cancel_requested_at: datetime | None
    worker_id: UUID | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    run_after: datetime
    idempotency_key: str | None
    group_key: str | None
    dependencies: list[int]


class TaskId(TypedDict):
    """A row naming one task."""

    task_id: int


class CancelResult(TypedDict):
    """What ``omnispindle.cancel_task`` did: the state after it, and whether it changed."""

    state: str
    changed: bool


class StreamRow(TypedDict):
    """One stored partial result of a task."""

    seq: int
    attempt: int
    payload: Json
    created_at: datetime


class WorkerSummaryRow(TypedDict):
    """One worker as ``omnispindle status`` shows it."""

    name: str
    host: str
    pid: int
    state: str
    capabilities: list[str]
    concurrency: int
    running_tasks: int
    heartbeat_age_seconds: float


class WorkerRow(WorkerSummaryRow):
    """A registered worker and its health (``list_workers``); ``lost``: active, but
    silent for longer than its lease."""

    id: UUID
    started_at: datetime
    stopped_at: datetime | None
    lost: bool


class StateCounts(TypedDict):
    """Tasks of one type in each state."""

    task_type: str
    blocked: int
    pending: int
    running: int
    succeeded: int
    failed: int
    cancelled: int


class QueueSummaryRow(StateCounts):
    """Tasks of one type in each state, the wait of its oldest ready task, and the
    running tasks whose lease expired (nothing has swept them yet)."""

    oldest_ready_seconds: float | None
    expired_leases: int
    oldest_expired_lease_seconds: float | None


class TaskForPeople(TypedDict):
    """What the commands for people show of every task."""

    task_id: int
    task_type: str
    state: str
    priority: int
    attempts: int
    max_attempts: int
    created_at: datetime
    age_seconds: float
    worker_name: str | None
    cancel_reason: str | None


class TaskListRow(TaskForPeople):
    """One line of ``omnispindle tasks``: a task and its last error."""

    error_type: str | None
    error_message: str | None


class Relative(TypedDict):
    """A task on either side of a dependency edge."""

    task_id: int
    task_type: str
    state: str


class TaskDetail(TaskForPeople):
    """One task in full, for ``omnispindle tasks ID``."""

    retry_backoff: float
    timeout_seconds: float | None
    required_capabilities: list[str]
    allow_failed_dependencies: bool
    pending_dependencies: int
    parameters: dict[str, Json]
    result: Json
    errors: list[dict[str, Json]]
    cancel_requested_at: datetime | None
    worker_id: UUID | None
    started_at: datetime | None
    finished_at: datetime | None
    run_after: datetime
    lease_expires_at: datetime | None
    dependencies: list[Relative]
    dependents: list[Relative]
    idempotency_key: str | None
    group_key: str | None


class TaskStateRow(TypedDict):
    """A task's id and current state."""

    task_id: int
    state: str


class RetriedTask(TypedDict):
    """A failed task put back to pending, and the dependents it brought back."""

    task_id: int
    state: str
    attempts: int
    max_attempts: int
    dependents: list[int]


class TaskTypeMetrics(StateCounts):
    """The figures of one task type (``task_metrics``, plus the last minute's failures)."""

    finished_last_minute: int
    succeeded_last_minute: int
    failed_last_minute: int
    cancelled_last_minute: int
    finished_last_hour: int
    succeeded_last_hour: int
    failed_last_hour: int
    cancelled_last_hour: int
    retried_last_hour: int
    failure_rate_last_hour: float | None
    retry_rate_last_hour: float | None
    wait_p50_seconds: float | None
    wait_p95_seconds: float | None
    wait_p99_seconds: float | None
    run_p50_seconds: float | None
    run_p95_seconds: float | None
    run_p99_seconds: float | None
    oldest_ready_seconds: float | None


class WorkerMetrics(TypedDict):
    """The figures of one worker (``worker_metrics``)."""

    id: str
    name: str
    host: str
    pid: int
    state: str
    concurrency: int
    running_tasks: int
    utilisation: float
    finished_last_minute: int
    finished_last_hour: int
    failed_last_hour: int
    heartbeat_age_seconds: float


class WorkerCount(TypedDict):
    """How many workers are in one state."""

    state: str
    workers: int


class PausedTaskType(TypedDict):
    """A paused task type: since when, and why (None when no reason was given)."""

    task_type: str
    paused_at: datetime
    reason: str | None


class TaskTypeLimit(TypedDict):
    """A limited task type: its limits (None where it has none), its running tasks,
    the tokens its bucket holds now, its ready tasks and how many a limit holds back."""

    task_type: str
    max_running: int | None
    running: int
    starts_per_second: float | None
    burst: int | None
    tokens: float | None
    ready: int
    held_back: int
    max_running_per_group: int | None
    starts_per_second_per_group: float | None


class TypeDemand(TypedDict):
    """What one task type asks of the workers: its running and ready tasks, and how
    many of both could run at once (within its running limit; running only if paused)."""

    task_type: str
    running: int
    ready: int
    paused: bool
    max_running: int | None
    demand: int


class UnclaimableTasks(TypedDict):
    """Ready tasks of one type that need ``required_capabilities``, which no live
    worker of that type declares all of; ``missing_capabilities``: those of them
    none declares (empty when each is declared, but by different workers)."""

    task_type: str
    required_capabilities: list[str]
    ready: int
    missing_capabilities: list[str]


class TaskTypeStrategy(TypedDict):
    """A task type ordered otherwise than by strict priority: 'aging', with the wait
    in seconds that raises a task's effective priority by one."""

    task_type: str
    strategy: str
    aging_seconds: float | None
    set_at: datetime


class LimitOfType(TypedDict):
    """A task type that claims take apart, with its limits (None where it has
    none), as a worker paces its claims by them."""

    task_type: str
    max_running: int | None
    starts_per_second: float | None
    max_running_per_group: int | None
    starts_per_second_per_group: float | None


class SavedSchedule(TypedDict):
    """A periodic schedule as saved; ``timezone`` is the zone its cron is read in."""

    name: str
    cron: str
    timezone: str
    task_type: str
    enabled: bool
    created_at: datetime
    updated_at: datetime


class ScheduleRow(TypedDict):
    """A periodic schedule with its latest tick and the task that tick enqueued."""

    name: str
    cron: str
    timezone: str
    task_type: str
    enabled: bool
    last_tick_at: datetime | None
    last_task_id: int | None
    created_at: datetime
    updated_at: datetime


class ScheduleSummary(ScheduleRow):
    """A schedule as the clients list it: also when it fires next (None when disabled)."""

    next_tick_at: datetime | None


class DueSchedule(TypedDict):
    """An enabled schedule, the database's clock, and the schedule's latest tick."""

    name: str
    cron: str
    timezone: str
    updated_at: datetime
    now: datetime
    last_tick_at: datetime | None


class EnqueuedTick(TypedDict):
    """A tick that this call enqueued (another worker had not)."""

    periodic_name: str
    tick_at: datetime
    task_id: int


class PrunableTask(TypedDict):
    """A finished task locked for pruning."""

    id: int
    finished_at: datetime


class StateCount(TypedDict):
    """How many tasks are in one state."""

    state: str
    count: int


class RollupSpan(TypedDict):
    """The finished_at span one rollup pass counts: [since, until)."""

    since: datetime
    until: datetime


class OverviewRow(StateCounts):
    """One task type on the dashboard's overview: unfinished tasks now, as in
    :class:`QueueSummaryRow`, but succeeded, failed and cancelled only in the
    last hour."""

    oldest_ready_seconds: float | None
    expired_leases: int


class ScanFloor(TypedDict):
    """How far down one page of a filtered task list reads: ``floor``, the lowest id
    of the ``examined`` newest tasks below its cursor (None: no task is below it)."""

    floor: int | None
    examined: int


class MinuteOutcomes(TypedDict):
    """Tasks finished in one minute (``minute``: its start, in Unix seconds), by outcome;
    ``retried``: those that finished after more than one attempt."""

    minute: int
    succeeded: int
    failed: int
    cancelled: int
    retried: int


class DashboardWorkerRow(WorkerSummaryRow):
    """A worker as the dashboard shows it: its health and what it finished lately."""

    finished_last_hour: int
    failed_last_hour: int
    started_at: datetime


class GraphNode(TypedDict):
    """A task of a workflow, and the ids of the tasks it depends on."""

    task_id: int
    task_type: str
    state: str
    depends_on: list[int]
