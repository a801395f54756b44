"""Where a worker's executors run: a set of threads, and an event loop for coroutines.

Both hand back a call that can be abandoned; the worker deals in either
through the same three verbs: submit, abandon, shut down.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from typing import Any, Union

from omnispindle._db.rows import StepRow
from omnispindle._worker._event_loop import ExecutorLoop, is_coroutine_executor
from omnispindle._worker._execution import Outcome, run_async_executor, run_executor
from omnispindle._worker._threads import ExecutorThreads, ThreadCall
from omnispindle.context import TaskContext

Executor = Callable[[dict[str, Any]], Any]
# A running executor call: a thread's, or a coroutine's future.
Call = Union[ThreadCall, "Future[Outcome]"]
OnDone = Callable[[Call], None]


class Runners:
    """The executor threads, and the event loop when some executor is a coroutine function.

    Args:
        executors: the executor of each task type.
        size: threads (calls at once; claims bound threads and loop together).
        name: prefix of the threads' names.
    """

    def __init__(self, executors: dict[str, Executor], size: int, name: str) -> None:
        self.executors = executors
        self.threads = ExecutorThreads(size, name)
        self.coroutine_types = {t for t, fn in executors.items() if is_coroutine_executor(fn)}
        self.loop = ExecutorLoop(f"{name}-asyncio") if self.coroutine_types else None

    def start(self, row: StepRow, context: TaskContext, on_done: OnDone) -> Call:
        """Start the executor of ``row``'s task type; ``on_done`` gets the call once it ends."""
        fn = self.executors[row["task_type"]]
        if self.loop is not None and row["task_type"] in self.coroutine_types:
            return self.loop.submit(on_done, run_async_executor, fn, row, context)
        return self.threads.submit(on_done, run_executor, fn, row, context)

    def resize(self, size: int) -> None:
        """Run ``size`` calls at once from now on (see ``ExecutorThreads.resize``)."""
        self.threads.resize(size)

    def abandon(self, call: Call) -> bool:
        """Give up on a running call (its thread is replaced, its coroutine cancelled);
        False if it is not running."""
        if isinstance(call, Future):
            return self.loop is not None and self.loop.abandon(call)
        return self.threads.abandon(call)

    def abandon_all(self, calls: Iterable[Call]) -> None:
        """Give up on every one of these calls."""
        for call in calls:
            self.abandon(call)

    def run_on(self, thread: threading.Thread) -> bool:
        """Whether executors run on ``thread``: one of the threads, or the event loop's."""
        return self.threads.runs_on(thread) or (self.loop is not None and self.loop.runs_on(thread))

    def shutdown(self) -> None:
        """Stop idle threads and the event loop (cancelling coroutines still running)."""
        self.threads.shutdown()
        if self.loop is not None:
            self.loop.shutdown()
