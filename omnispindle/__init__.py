"""Omnispindle: a task queue that lives inside PostgreSQL.

Example:
    >>> from omnispindle import TaskQueue, TaskQueueClient, WorkerClient  # doctest: +SKIP
"""

__version__ = "0.1.0"

from .async_client import AsyncTaskQueueClient
from .batches import entry
from .client import TaskQueueClient
from .context import TaskContext, current_task
from .errors import (
    ConfigurationError,
    OmnispindleError,
    TaskCancelled,
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
    "AsyncTaskQueueClient",
    "WorkerClient",
    "TaskState",
    "WorkerState",
    "TaskContext",
    "current_task",
    "entry",
    "OmnispindleError",
    "ConfigurationError",
    "ValidationError",
    "TaskNotFoundError",
    "TaskFailedError",
    "TaskCancelled",
    "WaitTimeoutError",
]
