"""A set of daemon threads for executors, where a hung call can be abandoned.

Python cannot kill a thread. When an executor overruns its timeout (or its
task is cancelled), the worker abandons the call: a replacement thread takes
its place at once, so the worker keeps its full concurrency, and the old
thread ends by itself whenever the function returns. Its late result is then
rejected by the lease check. The threads are daemons, so a call that never
returns does not keep the process alive at exit.

A call is a ``ThreadCall``, not a ``concurrent.futures.Future``: a no-op task costs
the worker tens of microseconds, and a Future's condition variable and
locking were a sizeable part of that.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger("omnispindle.worker")


class ThreadCall:
    """One queued call: its result once it returns, then one callback.

    Args:
        fn: called as ``fn(*args)`` on an executor thread.
        on_done: called with this ``ThreadCall`` on that thread once ``fn`` returns
            or raises.
    """

    __slots__ = ("_error", "_value", "args", "fn", "on_done")

    def __init__(
        self, fn: Callable[..., Any], args: tuple[Any, ...], on_done: Callable[[ThreadCall], Any]
    ) -> None:
        self.fn, self.args, self.on_done = fn, args, on_done
        self._value: Any = None
        self._error: BaseException | None = None

    def cancelled(self) -> bool:
        """A thread call cannot be cancelled (only abandoned)."""
        return False

    def result(self) -> Any:
        """What ``fn`` returned; raises what it raised. Only valid in ``on_done``."""
        if self._error is not None:
            raise self._error
        return self._value

    def run(self) -> None:
        try:
            self._value = self.fn(*self.args)
        except BaseException as exc:  # noqa: BLE001 - handed to the call's owner
            self._error = exc
        try:
            self.on_done(self)
        except Exception:
            log.exception("an executor call's completion callback failed")


class ExecutorThreads:
    """Runs submitted calls on ``size`` daemon threads.

    Args:
        size: threads running calls at once.
        name: prefix of the threads' names.
    """

    def __init__(self, size: int, name: str) -> None:
        self._calls: queue.SimpleQueue[ThreadCall | None] = queue.SimpleQueue()
        self._name = name
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._running: dict[ThreadCall, threading.Thread] = {}
        self._retired: set[threading.Thread] = set()
        self._live: set[threading.Thread] = set()
        self.size = 0
        self.resize(size)

    def resize(self, size: int) -> None:
        """Run ``size`` threads from now on: start more, or have idle ones end.

        Shrink only when no more than ``size`` calls are queued or running: a
        thread ends when it takes its stop from the queue, after the calls ahead.
        """
        for _ in range(size - self.size):
            self._spawn()
        for _ in range(self.size - size):
            self._calls.put(None)
        self.size = size

    def submit(
        self, on_done: Callable[[ThreadCall], Any], fn: Callable[..., Any], *args: Any
    ) -> ThreadCall:
        """Queue ``fn(*args)``; ``on_done`` gets the returned call once it ends."""
        call = ThreadCall(fn, args, on_done)
        self._calls.put(call)
        return call

    def abandon(self, call: ThreadCall) -> bool:
        """Give up on a running call: replace its thread. False if it is not running."""
        with self._lock:
            thread = self._running.get(call)
            if thread is None or thread in self._retired:
                return False
            self._retired.add(thread)
        self._spawn()
        return True

    def runs_on(self, thread: threading.Thread) -> bool:
        """Whether ``thread`` is one of these (an abandoned one too, until its call returns)."""
        with self._lock:
            return thread in self._live

    def shutdown(self) -> None:
        """Stop idle threads; threads inside a call end when it returns."""
        with self._lock:
            count = len(self._live)
        for _ in range(count):
            self._calls.put(None)

    def _spawn(self) -> None:
        thread = threading.Thread(
            target=self._serve, daemon=True, name=f"{self._name}-{next(self._ids)}"
        )
        with self._lock:
            self._live.add(thread)
        thread.start()

    def _serve(self) -> None:
        me = threading.current_thread()
        try:
            while me not in self._retired:
                call = self._calls.get()
                if call is None:
                    return
                self._run(me, call)
        finally:
            with self._lock:
                self._live.discard(me)
                self._retired.discard(me)

    def _run(self, me: threading.Thread, call: ThreadCall) -> None:
        with self._lock:
            self._running[call] = me
        try:
            call.run()
        finally:
            with self._lock:
                self._running.pop(call, None)
