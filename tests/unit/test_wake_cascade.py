"""Which children a notice of ready tasks wakes: one, then two more for each that
filled its slots, none for one that did not, and never one twice for a notice."""

from __future__ import annotations

from omnispindle.cli.wake_cascade import HOP_TIMEOUT, WIDEN, Cascade


def cascade_of(count: int) -> Cascade:
    cascade = Cascade()
    for child in range(count):
        cascade.add(child)
    return cascade


def test_a_notice_wakes_one_child_and_each_filled_one_two_more():
    cascade = cascade_of(6)
    assert cascade.notice(0.0) == [0]
    assert cascade.report(0, more=True, now=0.01) == [1, 2]
    assert cascade.report(1, more=False, now=0.02) == []
    assert cascade.report(2, more=True, now=0.02) == [3, 4]
    assert WIDEN == 2


def test_no_child_is_woken_twice_for_one_notice_so_a_busy_fleet_ends_its_cascade():
    cascade = cascade_of(3)
    woken = cascade.notice(0.0)
    for _ in range(10):  # every child says it is full, as busy ones do
        woken = [more for child in woken for more in cascade.report(child, True, 0.0)]
    assert woken == []
    assert cascade.next_deadline() is None


def test_the_next_notice_starts_with_the_next_child_in_turn():
    cascade = cascade_of(3)
    assert cascade.notice(0.0) == [0]
    assert cascade.report(0, more=False, now=0.0) == []
    assert cascade.notice(1.0) == [1]
    assert cascade.notice(2.0) == [2]


def test_a_silent_child_counts_as_a_full_one_once_its_time_is_up():
    cascade = cascade_of(4)
    assert cascade.notice(0.0) == [0]
    assert cascade.next_deadline() == HOP_TIMEOUT
    assert cascade.expired(HOP_TIMEOUT / 2) == []
    assert cascade.expired(HOP_TIMEOUT) == [1, 2]
    assert cascade.report(0, more=True, now=HOP_TIMEOUT) == []  # too late: already passed on


def test_a_report_nobody_asked_for_wakes_nobody():
    cascade = cascade_of(3)
    assert cascade.report(1, more=True, now=0.0) == []


def test_a_removed_child_is_not_woken():
    cascade = cascade_of(3)
    cascade.remove(0)
    assert cascade.notice(0.0) == [1]
    assert cascade.report(1, more=True, now=0.0) == [2]
    assert Cascade().notice(0.0) == []


def test_a_child_that_just_found_nothing_comes_after_the_rested_ones():
    """It waits out its guard against floods before it claims again, so those
    that have not found nothing lately are woken first."""
    cascade = cascade_of(3)
    assert cascade.notice(0.0) == [0]
    assert cascade.report(0, more=True, now=0.0) == [1, 2]
    cascade.report(1, more=False, now=0.0)
    cascade.report(2, more=True, now=0.0)
    assert cascade.notice(0.001) == [0]
    # In turn child 1 would come first; it found nothing a millisecond ago.
    assert cascade.report(0, more=True, now=0.001) == [2, 1]


def test_when_every_child_just_found_nothing_the_one_whose_gap_ends_first_is_woken():
    cascade = cascade_of(3)
    assert cascade.notice(0.0) == [0]
    assert cascade.report(0, more=True, now=0.0) == [1, 2]
    cascade.report(1, more=False, now=0.000)
    cascade.report(2, more=False, now=0.002)
    assert cascade.notice(0.005) == [0]
    cascade.report(0, more=False, now=0.006)
    assert cascade.notice(0.007) == [1]  # it found nothing longest ago
