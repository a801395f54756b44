"""The steady benchmark's feed: what it submits at a rate and to a depth, and what it refuses."""

from __future__ import annotations

import math

import pytest

from omnispindle.bench import feeding
from omnispindle.bench.workflows import BenchmarkError


def test_a_feed_to_a_depth_tops_up_what_the_workers_took_since_the_last_look():
    waiting = [0]
    batches: list[int] = []

    def submit(count: int) -> None:
        batches.append(count)
        waiting[0] += count

    def look() -> int:
        waiting[0] = max(0, waiting[0] - 3)  # a worker started 3 since the last look
        return waiting[0]

    fed = feeding.feed(submit, feeding.to_depth(10, look), 0.1, lambda: 0, lambda: 0)

    assert batches[0] == 10 and len(batches) > 2
    assert batches[1:] == [3] * (len(batches) - 1)
    assert fed.submitted == sum(batches)


def test_a_feed_at_a_rate_submits_what_is_due_by_the_time_it_looks():
    pace = feeding.at_rate(1000.0)
    assert pace(0.25, 0) == 250
    assert pace(0.25, 240) == 10
    assert pace(0.25, 250) == 0


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"rate": 0, "seconds": 1}, "rate and seconds"),
        ({"rate": 10, "seconds": math.inf}, "rate and seconds"),
        ({"rate": 10, "seconds": 1, "depth": 0}, "depth of at least 1"),
        ({"rate": 10, "seconds": 1, "share": math.nan}, "share above 0"),
        ({"rate": 10, "seconds": 1, "share": 0.5, "tasks": 0}, "at least one task"),
        ({"rate": 10, "seconds": 1, "share": 0.5, "depth": 5}, "not both"),
    ],
)
def test_a_steady_run_that_would_offer_nothing_is_refused(arguments, message):
    with pytest.raises(BenchmarkError, match=message):
        feeding.check_steady(**arguments)


def test_a_run_to_a_depth_or_at_a_share_needs_no_rate():
    feeding.check_steady(0, 1, depth=5)
    feeding.check_steady(0, 1, share=0.5, tasks=100)
