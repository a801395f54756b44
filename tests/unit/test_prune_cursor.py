"""The prune cursor a sweeper keeps between prune batches."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

from omnispindle._maintenance.retention import PruneCursor

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def locked(*seconds):
    return [{"finished_at": T0 + timedelta(seconds=s)} for s in seconds]


def test_a_batch_goes_on_from_the_latest_task_the_last_one_locked():
    cursor = PruneCursor(min_interval=3600.0)
    assert cursor.start() is None
    cursor.move(locked(3, 1, 2), seconds=0.001)
    assert cursor.start() == T0 + timedelta(seconds=3)
    cursor.move([], seconds=0.001)
    assert cursor.start() == T0 + timedelta(seconds=3)


def test_batches_start_at_the_oldest_again_after_the_interval():
    cursor = PruneCursor(min_interval=0.0)
    cursor.start()
    cursor.move(locked(5), seconds=0.0)
    assert cursor.start() is None


def test_slow_batches_from_the_oldest_put_the_next_one_off_in_proportion():
    cursor = PruneCursor(min_interval=0.0, factor=50.0)
    for seconds in (2.0, 3.0):
        cursor.start()
        before = time.monotonic()
        cursor.move(locked(5), seconds=seconds)
    assert cursor.oldest_walks.next_at >= before + 100.0
    assert cursor.start() == T0 + timedelta(seconds=5)
