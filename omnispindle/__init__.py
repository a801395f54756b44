"""Omnispindle: a task queue that lives inside PostgreSQL.

Example:
    >>> from omnispindle import TaskQueue, TaskQueueClient, WorkerClient  # doctest: +SKIP
"""

__version__ = "0.1.0"

from .client import TaskQueueClient
from .context import TaskContext, current_task
from .errors import (
    ConfigurationError,
    OmnispindleError,
    TaskFailedError,
    TaskNotFoundError,
    ValidationError,
    WaitTimeoutError,
)
from .states import TaskState, WorkerState
from .task_queue import TaskQueue
from .worker import WorkerClient

__all__ = [
    "TaskQueue",
    "TaskQueueClient",
    "WorkerClient",
    "TaskState",
    "WorkerState",
    "TaskContext",
    "current_task",
    "OmnispindleError",
    "ConfigurationError",
    "ValidationError",
    "TaskNotFoundError",
    "TaskFailedError",
    "WaitTimeoutError",
]
