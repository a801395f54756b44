"""Cancelling several tasks at once, all or nothing."""

from __future__ import annotations

from typing import Any, Iterable

import psycopg

from omnispindle._client.records import DEFAULT_CANCEL_REASON, cancel_outcome
from omnispindle._db.pool import run


def cancel_tasks(conn: psycopg.Connection, task_ids: Iterable[int],
                 reason: str | None = None) -> list[dict[str, Any]]:
    """Cancel tasks in one transaction through ``omnispindle.cancel_task``.

    Blocked and pending tasks end cancelled, running ones are asked to stop,
    finished ones stay as they are. An unknown id rolls everything back.

    Returns:
        ``{"task_id", "state", "cancelled", "message"}`` per task, in the given
        order (as ``TaskQueueClient.cancel_task``).

    Raises:
        TaskNotFoundError: an id does not exist.
    """
    ids = list(dict.fromkeys(task_ids))
    params = {"reason": reason or DEFAULT_CANCEL_REASON}
    outcomes: dict[int, dict[str, Any]] = {}
    with conn.transaction():
        # Newest first: dependents are nearly always newer than what they
        # depend on, so a listed dependent gets the given reason rather than
        # the "dependency N cancelled" of a listed ancestor's cascade.
        for task_id in sorted(ids, reverse=True):
            row = run(conn, "cancel_task", {**params, "id": task_id})[0]
            outcomes[task_id] = cancel_outcome(task_id, row["state"], row["changed"])
    return [outcomes[task_id] for task_id in ids]
