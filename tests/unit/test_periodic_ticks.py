"""Which ticks a scheduler pass enqueues."""

from datetime import datetime, timedelta, timezone

from omnispindle._core.cron import CronExpression
from omnispindle._maintenance.periodic import CATCH_UP, due_ticks

EVERY_SECOND = CronExpression.parse("* * * * * *")
HOURLY = CronExpression.parse("@hourly")
NOW = datetime(2026, 5, 4, 12, 30, 10, 500000, tzinfo=timezone.utc)
LONG_AGO = NOW - timedelta(days=30)


def seconds_ago(*offsets):
    return [NOW.replace(microsecond=0) - timedelta(seconds=s) for s in offsets]


def test_the_latest_tick_when_nothing_was_missed():
    assert due_ticks(EVERY_SECOND, NOW, LONG_AGO, seconds_ago(1)[0]) == seconds_ago(0)


def test_nothing_when_the_latest_tick_is_already_enqueued():
    assert due_ticks(EVERY_SECOND, NOW, LONG_AGO, seconds_ago(0)[0]) == []


def test_missed_ticks_within_the_window_are_all_due():
    assert due_ticks(EVERY_SECOND, NOW, LONG_AGO, seconds_ago(4)[0]) == seconds_ago(0, 1, 2, 3)


def test_after_a_long_gap_only_the_window_is_caught_up():
    ticks = due_ticks(EVERY_SECOND, NOW, LONG_AGO, NOW - timedelta(hours=1))
    assert len(ticks) == int(CATCH_UP)
    assert ticks[-1] > NOW - timedelta(seconds=CATCH_UP)


def test_a_rare_schedule_runs_its_latest_missed_tick_late():
    assert due_ticks(HOURLY, NOW, LONG_AGO, None) == [
        NOW.replace(minute=0, second=0, microsecond=0)
    ]


def test_no_tick_from_before_the_schedule_was_saved():
    assert due_ticks(HOURLY, NOW, NOW - timedelta(minutes=5), None) == []
    assert due_ticks(EVERY_SECOND, NOW, NOW - timedelta(seconds=2), None) == seconds_ago(0, 1)
