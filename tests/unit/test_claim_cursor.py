"""The claim cursor a worker keeps between claims."""

from __future__ import annotations

import time

from omnispindle._worker._claim_cursor import ClaimCursor


def rows(*pairs):
    return [{"priority": p, "id": i} for p, i in pairs]


def cursor_past_its_first_head_walk(position=(0, 10)) -> ClaimCursor:
    cursor = ClaimCursor(min_interval=3600.0)
    assert cursor.start() == (None, None)
    cursor.move(rows(position), limit=1, seconds=0.001)
    return cursor


def test_a_claim_leaves_the_cursor_at_its_last_task_in_claim_order():
    cursor = ClaimCursor(min_interval=3600.0)
    assert cursor.start() == (None, None)
    cursor.move(rows((5, 40), (0, 7), (0, 9), (5, 2)), limit=4, seconds=0.001)
    assert cursor.start() == (0, 9)


def test_a_short_or_empty_claim_keeps_the_cursor():
    cursor = cursor_past_its_first_head_walk()
    cursor.start()
    cursor.move(rows((0, 12)), limit=5, seconds=0.001)
    assert cursor.start() == (0, 12)
    cursor.move([], limit=5, seconds=0.001)
    assert cursor.start() == (0, 12)


def test_the_head_is_walked_again_after_the_shortest_interval_while_that_is_cheap():
    cursor = ClaimCursor(min_interval=0.0)
    cursor.start()
    cursor.move(rows((0, 1)), limit=1, seconds=0.0)
    assert cursor.start() == (None, None)


def test_slow_walks_from_the_head_put_the_next_one_off_in_proportion():
    cursor = ClaimCursor(min_interval=0.0, factor=50.0)
    for seconds in (2.0, 3.0):
        cursor.start()
        before = time.monotonic()
        cursor.move(rows((0, 1)), limit=1, seconds=seconds)
    assert cursor.head_walks.next_at >= before + 100.0
    assert cursor.start() == (0, 1)


def test_one_walk_from_the_head_that_took_long_puts_the_next_one_off_no_further():
    """It may have waited (a lock, a pooler through an outage, a paused process)."""
    cursor = ClaimCursor(min_interval=0.0, factor=50.0)
    cursor.start()
    cursor.move(rows((0, 1)), limit=1, seconds=0.001)
    cursor.head_walks.next_at = 0.0
    assert cursor.start() == (None, None)
    cursor.move(rows((0, 2)), limit=1, seconds=60.0)
    assert cursor.head_walks.next_at <= time.monotonic() + 0.05  # as after the quick one


def test_a_short_walk_from_the_head_keeps_the_further_position():
    cursor = cursor_past_its_first_head_walk((0, 50))
    cursor.head_walks.next_at = 0.0
    assert cursor.start() == (None, None)
    cursor.move(rows((0, 3)), limit=5, seconds=0.001)  # a retry found behind the cursor
    assert cursor.start() == (0, 50)


def test_a_full_walk_from_the_head_moves_the_cursor_back_to_its_last_task():
    cursor = cursor_past_its_first_head_walk((0, 50))
    cursor.head_walks.next_at = 0.0
    cursor.start()
    cursor.move(rows((0, 3), (0, 4)), limit=2, seconds=0.001)  # more may wait before 50
    assert cursor.start() == (0, 4)


def test_a_claim_from_the_cursor_says_when_the_next_walk_from_the_head_is_due():
    cursor = ClaimCursor(min_interval=0.0)
    assert cursor.start() == (None, None)
    assert cursor.head_walk_in() is None
    cursor.move(rows((0, 9)), limit=1, seconds=0.01)
    cursor.start()
    cursor.move(rows((0, 10)), limit=1, seconds=0.01)  # slow again: the next walk in 0.5 s
    assert cursor.start() == (0, 10)
    assert 0.0 < cursor.head_walk_in() <= 0.5
