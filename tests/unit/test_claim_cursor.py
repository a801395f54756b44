"""The claim cursor a worker keeps between claims."""

from __future__ import annotations

from omnispindle.claim_cursor import ClaimCursor


def rows(*pairs):
    return [{"priority": p, "id": i} for p, i in pairs]


def test_a_full_claim_leaves_the_cursor_at_its_last_task_in_claim_order():
    cursor = ClaimCursor()
    assert cursor.start() == (None, None)
    cursor.move(rows((5, 40), (0, 7), (0, 9), (5, 2)), limit=4)
    assert cursor.start() == (0, 9)


def test_a_short_claim_drops_the_cursor():
    cursor = ClaimCursor()
    cursor.move(rows((0, 1), (0, 2)), limit=2)
    cursor.move(rows((0, 3)), limit=2)
    assert cursor.start() == (None, None)


def test_a_cursor_is_followed_only_for_its_lifetime():
    cursor = ClaimCursor(lifetime=0.0)
    cursor.move(rows((0, 1)), limit=1)
    assert cursor.start() == (None, None)


def test_moving_an_existing_cursor_keeps_its_deadline():
    cursor = ClaimCursor(lifetime=3600.0)
    cursor.move(rows((0, 1)), limit=1)
    expires = cursor.expires
    cursor.move(rows((0, 2)), limit=1)
    assert cursor.expires == expires and cursor.start() == (0, 2)
