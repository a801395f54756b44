"""A fixed set of daemon threads for executors, where a hung call can be abandoned.

Python cannot kill a thread. When an executor overruns its timeout (or its
task is cancelled), the worker abandons the call: a replacement thread takes
its place at once, so the worker keeps its full concurrency, and the old
thread ends by itself whenever the function returns. Its late result is then
rejected by the lease check. The threads are daemons, so a call that never
returns does not keep the process alive at exit.
"""

from __future__ import annotations

import itertools
import queue
import threading
from concurrent.futures import Future
from typing import Any, Callable


class ExecutorThreads:
    """Runs submitted calls on ``size`` daemon threads.

    Args:
        size: threads running calls at once.
        name: prefix of the threads' names.
    """

    def __init__(self, size: int, name: str) -> None:
        self._calls: queue.SimpleQueue = queue.SimpleQueue()
        self._name = name
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._running: dict[Future, threading.Thread] = {}
        self._retired: set[threading.Thread] = set()
        self._live: set[threading.Thread] = set()
        for _ in range(size):
            self._spawn()

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        """Queue ``fn(*args)``; the returned future holds its result."""
        future: Future = Future()
        self._calls.put((future, fn, args))
        return future

    def abandon(self, future: Future) -> bool:
        """Give up on a running call: replace its thread. False if it is not running."""
        with self._lock:
            thread = self._running.get(future)
            if thread is None or thread in self._retired:
                return False
            self._retired.add(thread)
        self._spawn()
        return True

    def shutdown(self) -> None:
        """Stop idle threads; threads inside a call end when it returns."""
        with self._lock:
            count = len(self._live)
        for _ in range(count):
            self._calls.put(None)

    def _spawn(self) -> None:
        thread = threading.Thread(target=self._serve, daemon=True,
                                  name=f"{self._name}-{next(self._ids)}")
        with self._lock:
            self._live.add(thread)
        thread.start()

    def _serve(self) -> None:
        me = threading.current_thread()
        try:
            while me not in self._retired:
                item = self._calls.get()
                if item is None:
                    return
                self._run(me, *item)
        finally:
            with self._lock:
                self._live.discard(me)
                self._retired.discard(me)

    def _run(self, me: threading.Thread, future: Future, fn: Callable[..., Any], args: tuple) -> None:
        if not future.set_running_or_notify_cancel():
            return
        with self._lock:
            self._running[future] = me
        try:
            future.set_result(fn(*args))
        except BaseException as exc:  # noqa: BLE001 - handed to the future's owner
            future.set_exception(exc)
        finally:
            with self._lock:
                self._running.pop(future, None)
