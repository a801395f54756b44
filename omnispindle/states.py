"""Task and worker states; they mirror the Postgres enums of the same names."""

from __future__ import annotations

import enum


class TaskState(str, enum.Enum):
    """``omnispindle.task_state``: the life of a task."""

    BLOCKED = "blocked"
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class WorkerState(str, enum.Enum):
    """``omnispindle.worker_state``: the life of a worker process."""

    ACTIVE = "active"
    STOPPED = "stopped"
    DEAD = "dead"


FINISHED_STATES = frozenset({TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED})
# The same, as the strings task records carry.
FINISHED_VALUES = frozenset(state.value for state in FINISHED_STATES)
