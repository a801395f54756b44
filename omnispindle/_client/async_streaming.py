"""Reading a task's partial results in a coroutine: the twin of ``_client.streaming``."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from omnispindle._client import operations
from omnispindle._client._pacing import connection_wait, next_pause
from omnispindle._client.async_waiting import wait_event
from omnispindle._client.records import StreamEvent, final_event, partial_event
from omnispindle._db.async_notifier import AsyncNotifier
from omnispindle._db.async_pool import AsyncDatabase
from omnispindle._db.notifier import FINISHED_CHANNEL, STREAM_CHANNEL
from omnispindle._db.task_notices import naming
from omnispindle.errors import DatabaseUnavailableError, WaitTimeoutError
from omnispindle.states import FINISHED_VALUES


async def stream_events(
    db: AsyncDatabase,
    notifier: AsyncNotifier,
    task_id: int,
    timeout: float | None,
    poll_interval: float,
) -> AsyncIterator[StreamEvent]:
    """Yield partials in order and then the final record (see ``AsyncTaskQueueClient.stream_task``).

    Raises:
        TaskNotFoundError: no task has this id.
        WaitTimeoutError: the task had not finished within ``timeout`` seconds.
        DatabaseUnavailableError: the database was still unreachable at the timeout.
    """
    woken = notifier.subscribe((STREAM_CHANNEL, FINISHED_CHANNEL), naming(task_id))
    deadline = None if timeout is None else time.monotonic() + timeout
    after = 0
    try:
        while True:
            woken.clear()
            outage: DatabaseUnavailableError | None = None
            try:
                task, partials = await db.run(
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
            await wait_event(woken, pause)
    finally:
        notifier.unsubscribe(woken)
