"""One event loop, on a daemon thread of its own, for a worker's coroutine executors.

The twin of :class:`~omnispindle.executor_threads.ExecutorThreads`, with the
same ``submit``/``abandon``/``shutdown``: calls go in through
``asyncio.run_coroutine_threadsafe``, so the worker deals in
``concurrent.futures.Future`` for both. Unlike a thread, a coroutine can be
stopped: abandoning it cancels its future and so its asyncio task, and the
coroutine sees ``CancelledError`` at its next ``await``. A coroutine that
blocks (``time.sleep``, synchronous I/O) stalls every coroutine of the worker
and cannot be cancelled until it yields.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from omnispindle._worker._execution import Outcome

log = logging.getLogger("omnispindle.worker")

# Seconds cancelled coroutines get to end when the loop shuts down.
SHUTDOWN_GRACE = 2.0


def is_coroutine_executor(fn: Any) -> bool:
    """True for an ``async def`` function (or an object whose ``__call__`` is one)."""
    return inspect.iscoroutinefunction(fn) or (
        callable(fn) and inspect.iscoroutinefunction(type(fn).__call__)
    )


class ExecutorLoop:
    """Runs submitted coroutines on one event loop in a daemon thread.

    Args:
        name: the thread's name.
    """

    def __init__(self, name: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._lock = threading.Lock()
        self._running: set[Future[Outcome]] = set()
        self._stopping = False
        self._stopped = False  # the loop was asked to stop from within
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def submit(
        self,
        on_done: Callable[[Future[Outcome]], Any],
        fn: Callable[..., Coroutine[Any, Any, Any]],
        *args: Any,
    ) -> Future[Outcome]:
        """Start ``fn(*args)`` as a task on the loop; ``on_done`` gets the returned
        future once it ends or is cancelled."""
        future = asyncio.run_coroutine_threadsafe(fn(*args), self._loop)
        with self._lock:
            self._running.add(future)
        future.add_done_callback(self._forget)
        future.add_done_callback(on_done)
        return future

    def abandon(self, future: Future[Outcome]) -> bool:
        """Give up on a coroutine: cancel its task. False if it is not running."""
        with self._lock:
            if future not in self._running:
                return False
        # The future is cancelled at once (its late result can never arrive);
        # the task is cancelled on the loop's thread.
        return future.cancel()

    def shutdown(self) -> None:
        """Cancel the coroutines still running, then stop the loop once they have ended."""
        with self._lock:
            running = list(self._running)
        for future in running:
            future.cancel()
        with self._lock:
            stopping, self._stopping = self._stopping, True
        if not stopping:
            # Queued behind the cancellations above, even if the loop has not started yet.
            asyncio.run_coroutine_threadsafe(self._stop(), self._loop)
        self._thread.join(SHUTDOWN_GRACE + 1)

    def runs_on(self, thread: threading.Thread) -> bool:
        """Whether ``thread`` is the loop's."""
        return thread is self._thread

    def _forget(self, future: Future[Outcome]) -> None:
        with self._lock:
            self._running.discard(future)

    async def _stop(self) -> None:
        # Tasks the executors started themselves are cancelled too.
        others = asyncio.all_tasks() - {asyncio.current_task()}
        for task in others:
            task.cancel()
        if others:
            await asyncio.wait(others, timeout=SHUTDOWN_GRACE)
        self._stopped = True
        self._loop.stop()

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            while not self._run_until_stopped():
                pass
        finally:
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()

    def _run_until_stopped(self) -> bool:
        """Run the loop; False when something raised out of it, to run it again.

        asyncio lets a ``SystemExit`` or ``KeyboardInterrupt`` of a task or a
        callback out of the loop, once stored in that task. An executor's own
        coroutine catches both, but not the tasks it starts (``gather``,
        ``wait_for``, ``create_task``): the awaiting executor still gets it from
        the task, and the loop must go on for every other coroutine on it.
        """
        try:
            self._loop.run_forever()
        except BaseException as exc:  # no signal reaches this thread: it is not the main one
            if self._stopped:
                return True
            log.error(
                "a task or callback on the executors' event loop raised %s; the loop goes on",
                type(exc).__name__,
                exc_info=exc,
            )
            return False
        return True
