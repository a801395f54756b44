"""Reading a task's partial results as they arrive, then its final record."""

from __future__ import annotations

import threading
import time
from typing import Any, Iterator

from omnispindle._client.records import final_event, partial_event
from omnispindle.errors import WaitTimeoutError
from omnispindle._db.notifier import FINISHED_CHANNEL, STREAM_CHANNEL
from omnispindle.states import FINISHED_VALUES
from omnispindle._client.waiting import next_pause


def stream_events(client: Any, task_id: int, timeout: float | None) -> Iterator[dict[str, Any]]:
    """Yield partials in order and then the final record (see ``TaskQueueClient.stream_task``).

    The task's state is read before its partials, so when it shows finished,
    every partial emitted before the end is already readable: none is missed.
    """
    notifier = client.queue.notifier
    woken = threading.Event()
    handles = [notifier.subscribe(channel, woken.set) for channel in (STREAM_CHANNEL, FINISHED_CHANNEL)]
    deadline = None if timeout is None else time.monotonic() + timeout
    after = 0
    try:
        while True:
            woken.clear()
            task = client.get_task(task_id)
            for row in client.queue.db.fetch("read_stream", {"id": task_id, "after": after}):
                after = row["seq"]
                yield partial_event(row)
            if task["state"] in FINISHED_VALUES:
                yield final_event(task)
                return
            pause = next_pause(deadline, client.poll_interval)
            if pause is None:
                raise WaitTimeoutError(f"task {task_id} had not finished streaming in time")
            woken.wait(pause)
    finally:
        for handle in handles:
            notifier.unsubscribe(handle)
