"""How a worker paces its claims by its task types' limits."""

from __future__ import annotations

from omnispindle._worker._limit_pacing import (
    RUNNING_RECHECK,
    SHORTEST_RECHECK,
    LimitPacing,
    recheck_after,
)


def limit(task_type="t", max_running=None, starts_per_second=None, **per_group):
    return {
        "task_type": task_type,
        "max_running": max_running,
        "starts_per_second": starts_per_second,
        "max_running_per_group": per_group.get("max_running_per_group"),
        "starts_per_second_per_group": per_group.get("starts_per_second_per_group"),
    }


def test_no_limits_no_recheck():
    assert recheck_after([]) is None


def test_a_rate_rechecks_after_one_token_and_no_sooner_than_the_shortest():
    assert recheck_after([limit(starts_per_second=4)]) == 0.25
    assert recheck_after([limit(starts_per_second=2)]) == 0.5
    assert recheck_after([limit(starts_per_second=10_000)]) == SHORTEST_RECHECK


def test_limits_per_group_pace_claims_as_the_types_own_do():
    """A type limited only per group was never rechecked: its held-back tasks
    waited for the poll interval."""
    assert recheck_after([limit(max_running_per_group=2)]) == RUNNING_RECHECK
    assert recheck_after([limit(starts_per_second_per_group=4)]) == 0.25


def test_the_soonest_of_several_limits_wins():
    limits = [limit("a", max_running=3), limit("b", starts_per_second=1)]
    assert recheck_after(limits) == RUNNING_RECHECK


def test_rows_of_limited_types_stay_out_of_the_cursor():
    pacing = LimitPacing()
    assert pacing.stale
    rows = [{"task_type": "a"}, {"task_type": "b"}]
    assert pacing.walked(rows) == rows
    pacing.update([limit("a", max_running=1)])
    assert not pacing.stale
    assert pacing.walked(rows) == [{"task_type": "b"}]


def test_claims_that_find_nothing_wait_longer_each_time_until_one_finds_work():
    pacing = LimitPacing()
    assert pacing.recheck_in(0) is None  # no limits: the poll interval applies
    pacing.update([limit(starts_per_second=50)])
    assert [pacing.recheck_in(0) for _ in range(3)] == [0.04, 0.08, 0.16]
    assert pacing.recheck_in(1) == 0.02
    assert max(pacing.recheck_in(0) for _ in range(50)) == 0.02 * 2**10
