"""Storing the partial results a running attempt emits (``TaskContext.emit``)."""

from __future__ import annotations

import threading
from typing import Any

from omnispindle._core import limits
from omnispindle._core.validation import sized_json_text
from omnispindle._db import queries as q
from omnispindle._db.query import Runner
from omnispindle._db.rows import StepRow
from omnispindle.errors import LeaseLostError, ValidationError


class Emitter:
    """The ``emit`` of one attempt, callable from any thread of its executor.

    Emits take turns: each numbers its row one past the stream's last, so two
    at once would take the same number, and the attempt's byte budget is
    checked and spent as one step.
    """

    def __init__(self, db: Runner, row: StepRow) -> None:
        self._db = db
        self._row = row
        self._streamed = 0  # bytes this attempt has streamed so far
        self._turn = threading.Lock()

    def __call__(self, data: Any) -> int:
        """Store one partial result; its sequence number.

        Raises:
            ValidationError: not storable JSON, or over a limit of the stream.
            LeaseLostError: this attempt no longer owns the task.
        """
        allowed = limits.current()
        text, size = sized_json_text(data, "a partial result", allowed.partial_result_bytes)
        task_id = self._row["id"]
        with self._turn:
            if self._streamed + size > allowed.stream_bytes:
                raise ValidationError(
                    f"task {task_id}: this attempt's partial results would take "
                    f"{self._streamed + size:,} bytes, over the limit of "
                    f"{allowed.stream_bytes:,} (omnispindle.set_limits)"
                )
            seq = self._db.run(q.tasks.emit_partial(task_id, self._row["lease_token"], text))
            if seq is None:
                raise LeaseLostError(f"task {task_id}: this attempt no longer holds the lease")
            self._streamed += size
            return seq
