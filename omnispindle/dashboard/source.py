"""Where the dashboard reads and writes: one queue for reading (through its
replica, when one is given), and one for the actions (the same one, unless a
separate DSN with the right to write is given).

The queues open on first use, not when the app is built: an app mounted in
another one builds at import time, and its lifespan never runs.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TypeVar

from omnispindle._db.query import Operation
from omnispindle.task_queue import TaskQueue

T = TypeVar("T")


@dataclass
class Source:
    """The queue the dashboard shows, opened lazily and closed by :meth:`close`."""

    dsn: str
    schema: str | None = None
    write_dsn: str | None = None
    read_dsn: str | None = None
    pooler: bool = False
    _queues: dict[str, TaskQueue] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def read(self, operation: Operation[T]) -> T:
        """Run a read on the reading queue."""
        return self._queue(self.dsn).reads.run(operation)

    def write(self, operation: Operation[T]) -> T:
        """Run an action on the writing queue."""
        return self._queue(self.write_dsn or self.dsn).db.run(operation)

    def _queue(self, dsn: str) -> TaskQueue:
        with self._lock:
            if dsn not in self._queues:
                # Never migrated: a dashboard only looks at a queue others set up.
                self._queues[dsn] = TaskQueue(
                    dsn,
                    migrate=False,
                    schema=self.schema,
                    pool_size=4,
                    read_dsn=self.read_dsn,
                    pooler=self.pooler,
                )
            return self._queues[dsn]

    def close(self) -> None:
        """Close every queue opened so far."""
        with self._lock:
            for queue in self._queues.values():
                queue.shutdown()
            self._queues.clear()
