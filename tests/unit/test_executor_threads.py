"""The executor threads: results reach their callback, and an abandoned call frees its slot."""

from __future__ import annotations

import queue
import threading

import pytest

from omnispindle._worker._threads import ExecutorThreads

WAIT_S = 10


def test_each_call_hands_its_result_or_error_to_its_callback():
    threads = ExecutorThreads(2, "test")
    ended: queue.SimpleQueue = queue.SimpleQueue()
    threads.submit(ended.put, lambda a, b: a + b, 2, 3)
    threads.submit(ended.put, lambda: 1 / 0)
    results = []
    for _ in range(2):
        call = ended.get(timeout=WAIT_S)
        try:
            results.append(call.result())
        except ZeroDivisionError as exc:
            results.append(type(exc).__name__)
    assert sorted(results, key=str) == [5, "ZeroDivisionError"]
    threads.shutdown()


def test_an_abandoned_call_is_replaced_so_the_others_still_run():
    threads = ExecutorThreads(1, "test")
    release, ended = threading.Event(), queue.SimpleQueue()
    hung = threads.submit(ended.put, release.wait)
    # Wait until the hung call occupies the only thread.
    started = threading.Event()
    blocker = threads.submit(ended.put, started.set)
    assert not started.wait(0.2)
    assert threads.abandon(hung)
    assert started.wait(WAIT_S)
    assert ended.get(timeout=WAIT_S) is blocker
    assert not threads.abandon(blocker)  # it is no longer running
    release.set()
    assert ended.get(timeout=WAIT_S) is hung
    threads.shutdown()


def test_a_failing_callback_does_not_stop_the_thread(caplog):
    threads = ExecutorThreads(1, "test")
    ended: queue.SimpleQueue = queue.SimpleQueue()

    def broken(call):
        raise RuntimeError("callback broke")

    threads.submit(broken, lambda: None)
    threads.submit(ended.put, lambda: "still served")
    assert ended.get(timeout=WAIT_S).result() == "still served"
    assert "callback" in caplog.text
    threads.shutdown()


def test_calls_cannot_be_cancelled():
    threads = ExecutorThreads(1, "test")
    ended: queue.SimpleQueue = queue.SimpleQueue()
    call = threads.submit(ended.put, lambda: None)
    assert ended.get(timeout=WAIT_S) is call and not call.cancelled()
    threads.shutdown()


@pytest.mark.parametrize("size", [1, 4])
def test_many_calls_all_end_once(size):
    threads = ExecutorThreads(size, "test")
    ended: queue.SimpleQueue = queue.SimpleQueue()
    for i in range(200):
        threads.submit(ended.put, lambda i=i: i)
    assert sorted(ended.get(timeout=WAIT_S).result() for _ in range(200)) == list(range(200))
    assert ended.empty()
    threads.shutdown()
