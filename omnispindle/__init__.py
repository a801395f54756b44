"""Omnispindle: a task queue that lives inside PostgreSQL.

Example:
    >>> from omnispindle import TaskQueue, TaskQueueClient, WorkerClient  # doctest: +SKIP
"""

from omnispindle._core.batches import entry
from omnispindle._version import __version__
from omnispindle.async_client import AsyncTaskQueueClient
from omnispindle.client import TaskQueueClient
from omnispindle.context import TaskContext, current_task
from omnispindle.errors import (
    ConfigurationError,
    OmnispindleError,
    TaskCancelled,
    TaskFailedError,
    TaskNotFoundError,
    ValidationError,
    WaitTimeoutError,
)
from omnispindle.states import TaskState, WorkerState
from omnispindle.task_queue import TaskQueue
from omnispindle.worker import WorkerClient

__all__ = [
    "AsyncTaskQueueClient",
    "ConfigurationError",
    "OmnispindleError",
    "TaskCancelled",
    "TaskContext",
    "TaskFailedError",
    "TaskNotFoundError",
    "TaskQueue",
    "TaskQueueClient",
    "TaskState",
    "ValidationError",
    "WaitTimeoutError",
    "WorkerClient",
    "WorkerState",
    "__version__",
    "current_task",
    "entry",
]
