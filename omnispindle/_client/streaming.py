"""Reading a task's partial results as they arrive, then its final record (blocking)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

from omnispindle._client import operations
from omnispindle._client._pacing import connection_wait, next_pause
from omnispindle._client.records import StreamEvent, final_event, partial_event
from omnispindle._db.notifier import FINISHED_CHANNEL, STREAM_CHANNEL, Listens
from omnispindle._db.pool import Database
from omnispindle._db.task_notices import naming, wake_for
from omnispindle.errors import DatabaseUnavailableError, WaitTimeoutError
from omnispindle.states import FINISHED_VALUES


def require_task(reads: Database, task_id: int, timeout: float | None) -> None:
    """Raise for an unknown id before the stream starts, as ``stream_task`` promises,
    waiting for a connection no longer than the stream may take. With the
    database away, the stream's first check finds out instead: the stream rides
    the outage out within its timeout, as any wait does.

    Raises:
        TaskNotFoundError: no task has this id.
    """
    with contextlib.suppress(DatabaseUnavailableError):
        reads.run(operations.get_task(task_id), wait=timeout)


def stream_events(
    db: Database, notifier: Listens, task_id: int, timeout: float | None, poll_interval: float
) -> Iterator[StreamEvent]:
    """Yield partials in order and then the final record (see ``TaskQueueClient.stream_task``).

    Raises:
        TaskNotFoundError: no task has this id.
        WaitTimeoutError: the task had not finished within ``timeout`` seconds.
        DatabaseUnavailableError: the database was still unreachable at the timeout.
    """
    woken = threading.Event()
    heard = wake_for(naming(task_id), woken.set)  # its own task's partials and finish
    handles = [
        notifier.subscribe(channel, heard, with_payload=True)
        for channel in (STREAM_CHANNEL, FINISHED_CHANNEL)
    ]
    deadline = None if timeout is None else time.monotonic() + timeout
    after = 0
    try:
        while True:
            woken.clear()
            outage: DatabaseUnavailableError | None = None
            try:
                task, partials = db.run(
                    operations.stream_step(task_id, after), wait=connection_wait(deadline)
                )
            except DatabaseUnavailableError as exc:  # ride through a restart
                outage, task, partials = exc, None, []
            for row in partials:
                after = row["seq"]
                yield partial_event(row)
            if task is not None and task["state"] in FINISHED_VALUES:
                yield final_event(task)
                return
            pause = next_pause(deadline, poll_interval)
            if pause is None and outage is not None:
                raise outage
            if pause is None:
                raise WaitTimeoutError(f"task {task_id} had not finished streaming in time")
            woken.wait(pause)
    finally:
        for handle in handles:
            notifier.unsubscribe(handle)
