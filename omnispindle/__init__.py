"""Omnispindle: a task queue that lives inside PostgreSQL.

Example:
    >>> from omnispindle import TaskQueue, TaskQueueClient, WorkerClient  # doctest: +SKIP
"""

from omnispindle._core.batches import entry
from omnispindle._core.limits import Limits, set_limits
from omnispindle._core.unreadable import UnreadableJson
from omnispindle._version import __version__
from omnispindle.async_client import AsyncTaskQueueClient
from omnispindle.client import TaskQueueClient
from omnispindle.context import TaskContext, current_task
from omnispindle.errors import (
    ConfigurationError,
    CronExpressionError,
    DatabaseUnavailableError,
    DependencyCycleError,
    DependencyStateError,
    EmbeddedServerUnavailable,
    FailedTransactionError,
    FailForGood,
    IdempotencyKeyConflictError,
    IllegalTransitionError,
    LeaseLostError,
    LockTimeoutError,
    OmnispindleError,
    PermissionDeniedError,
    ReadOnlyDatabaseError,
    SchemaMissingError,
    SchemaOutdatedError,
    TaskCancelled,
    TaskFailedError,
    TaskNotFoundError,
    TaskStateError,
    UnknownDependencyError,
    ValidationError,
    WaitTimeoutError,
)
from omnispindle.registry import task
from omnispindle.states import TaskState, WorkerState
from omnispindle.task_queue import TaskQueue
from omnispindle.worker import WorkerClient

# The queue, its clients and worker, what a running task sees, and every error
# Omnispindle raises on purpose (each documented where it can be raised), and
# FailForGood, which an executor raises to fail its task with no retry.
__all__ = [
    "AsyncTaskQueueClient",
    "ConfigurationError",
    "CronExpressionError",
    "DatabaseUnavailableError",
    "DependencyCycleError",
    "DependencyStateError",
    "EmbeddedServerUnavailable",
    "FailForGood",
    "FailedTransactionError",
    "IdempotencyKeyConflictError",
    "IllegalTransitionError",
    "LeaseLostError",
    "Limits",
    "LockTimeoutError",
    "OmnispindleError",
    "PermissionDeniedError",
    "ReadOnlyDatabaseError",
    "SchemaMissingError",
    "SchemaOutdatedError",
    "TaskCancelled",
    "TaskContext",
    "TaskFailedError",
    "TaskNotFoundError",
    "TaskQueue",
    "TaskQueueClient",
    "TaskState",
    "TaskStateError",
    "UnknownDependencyError",
    "UnreadableJson",
    "ValidationError",
    "WaitTimeoutError",
    "WorkerClient",
    "WorkerState",
    "__version__",
    "current_task",
    "entry",
    "set_limits",
    "task",
]
