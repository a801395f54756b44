"""The pure parts of waiting: naming ids compactly, the wait's account, check pacing."""

from __future__ import annotations

import pytest

from omnispindle import TaskNotFoundError
from omnispindle._client._batch_wait import (
    FEW_LEFT,
    RECORD_CHUNK,
    SHORT_RUN,
    FinishedTasks,
    id_ranges,
)
from omnispindle._client._pacing import CheckPacer


def finished_row(task_id: int, state: str = "succeeded") -> dict:
    return {"task_id": task_id, "state": state, "dependencies": None}


def test_a_long_run_is_one_range_and_short_runs_go_id_by_id():
    long_run = list(range(100, 100 + SHORT_RUN))
    short_run = list(range(200, 200 + SHORT_RUN - 1))
    assert id_ranges([5] + long_run + short_run + [300]) == {
        "ids": [5] + short_run + [300],
        "lo": [100],
        "hi": [100 + SHORT_RUN - 1],
    }


def test_no_ids_name_nothing():
    assert id_ranges([]) == {"ids": [], "lo": [], "hi": []}


def test_a_hundred_thousand_consecutive_ids_are_two_numbers():
    assert id_ranges(range(1, 100_001)) == {"ids": [], "lo": [1], "hi": [100_000]}


def named(query) -> tuple[str, dict]:
    return query.statement.name, query.params


def test_the_account_names_only_unfinished_ids():
    finished = FinishedTasks(list(range(1, 41)), timeout=None)
    assert named(finished.find())[1] == {"ids": [], "lo": [1], "hi": [40]}
    assert finished.add([finished_row(i) for i in range(1, 11)] + [finished_row(15)])
    assert named(finished.find())[1] == {"ids": [11, 12, 13, 14], "lo": [16], "hi": [40]}
    assert (finished.count, finished.total, finished.done) == (11, 40, False)


def test_a_check_fetches_records_directly_only_when_few_are_left():
    finished = FinishedTasks(list(range(1, FEW_LEFT + 2)), timeout=None)
    assert named(finished.find()) == (
        "finished_task_ids",
        {"ids": [], "lo": [1], "hi": [FEW_LEFT + 1]},
    )
    finished.add([finished_row(1)])
    assert named(finished.find()) == (
        "get_tasks",
        {"ids": list(range(2, FEW_LEFT + 2)), "finished_only": True},
    )


def test_ids_alone_add_nothing():
    finished = FinishedTasks([1, 2], timeout=None)
    assert not finished.add([1])
    assert [named(f) for f in finished.fetches([1])] == [
        ("get_tasks", {"ids": [1], "finished_only": True})
    ]


def test_unfinished_rows_are_not_counted():
    finished = FinishedTasks([1, 2], timeout=None)
    assert not finished.add([finished_row(1, "pending"), finished_row(2, "running")])
    assert finished.count == 0


def test_records_follow_the_given_order_with_repeats():
    finished = FinishedTasks([3, 1, 2, 3], timeout=None)
    assert finished.total == 3
    finished.add([finished_row(1), finished_row(2), finished_row(3, "failed")])
    assert finished.done
    assert [r["task_id"] for r in finished.records()] == [3, 1, 2, 3]
    assert finished.records()[0]["dependencies"] == []


def test_fetches_ask_only_for_new_records_in_chunks():
    count = RECORD_CHUNK * 2 + 1
    finished = FinishedTasks(list(range(1, count + 1)), timeout=None)
    finished.add([finished_row(1)])
    fetches = [named(f)[1] for f in finished.fetches(list(range(count, 0, -1)))]
    assert [len(f["ids"]) for f in fetches] == [RECORD_CHUNK, RECORD_CHUNK]
    assert fetches[0]["ids"][0] == 2 and fetches[0]["finished_only"] is True


def test_the_first_missing_id_in_the_given_order_is_named():
    finished = FinishedTasks([4, 9, 2, 7], timeout=None)
    check = finished.require_found()
    assert named(check) == ("missing_task_ids", {"ids": [2, 4, 7, 9], "lo": [], "hi": []})
    with pytest.raises(TaskNotFoundError, match="no task with id 9$"):
        check.read([{"task_id": 7}, {"task_id": 9}])
    check.read([])


def test_an_id_named_finished_but_fetched_without_a_record_is_looked_for_again():
    finished = FinishedTasks([1, 2, 3], timeout=None)
    finished.add([finished_row(1)])  # the fetch found 1 and 2 finished, and no record of 2
    assert finished.recheck_due([1, 2], now=0.0)
    assert not finished.recheck_due([1], now=0.0)


def test_a_wait_looks_again_for_its_tasks_after_a_quiet_spell():
    finished = FinishedTasks([1, 2, 3], timeout=None, recheck_after=10.0)
    assert not finished.recheck_due([], now=100.0)
    assert not finished.recheck_due([], now=109.0)
    finished.add([finished_row(1)])  # a task finished: the spell starts again
    assert not finished.recheck_due([], now=115.0)
    assert finished.recheck_due([], now=125.0)
    assert not finished.recheck_due([], now=130.0)
    assert finished.recheck_due([], now=135.0)
    finished.add([finished_row(2), finished_row(3)])
    assert not finished.recheck_due([], now=1000.0)  # done: nothing to look for


def test_pacing_leaves_no_gap_after_the_first_check():
    pacer = CheckPacer(poll_interval=1.0)
    pacer.measured(0.5)
    pacer.checked(10.5)
    assert pacer.hold(10.5, deadline=None) == 0


def test_an_unpaced_wait_checks_at_every_notification():
    pacer = CheckPacer(poll_interval=1.0, paced=False)
    for now in (1.0, 2.0, 3.0):
        pacer.measured(0.5)
        pacer.checked(now)
        assert pacer.hold(now, deadline=None) == 0


@pytest.mark.parametrize(
    ("cost", "gap"),
    [
        (0.0001, CheckPacer.FLOOR),
        (0.5 / CheckPacer.FACTOR, 0.5),
        (1.0, 1.0),
    ],
)
def test_pacing_gap_is_a_multiple_of_the_cost_within_floor_and_poll_interval(cost, gap):
    pacer = CheckPacer(poll_interval=1.0)
    pacer.checked(0.0)
    pacer.measured(cost)
    pacer.checked(1.0)
    assert pacer.hold(1.0, None) == pytest.approx(gap)
    assert pacer.hold(1.0 + gap / 2, None) == pytest.approx(gap / 2)
    assert pacer.hold(1.0 + gap, None) == 0


def test_pacing_ignores_a_slow_round_trip_among_fast_ones():
    pacer = CheckPacer(poll_interval=1.0)
    pacer.checked(0.0)
    for cost in (0.5 / CheckPacer.FACTOR, 1.0, 1.0):
        pacer.measured(cost)
    pacer.checked(1.0)
    assert pacer.hold(1.0, None) == pytest.approx(0.5)
    pacer.measured(1.0)
    pacer.checked(2.0)
    assert pacer.hold(2.0, None) == pytest.approx(1.0)


def test_pacing_times_the_measured_block():
    pacer = CheckPacer(poll_interval=1.0)
    pacer.checked(0.0)
    with pacer.timing():
        pass
    pacer.checked(1.0)
    assert pacer.hold(1.0, None) == pytest.approx(CheckPacer.FLOOR)


def test_pacing_never_holds_past_the_deadline():
    pacer = CheckPacer(poll_interval=1.0)
    pacer.checked(0.0)
    pacer.measured(0.5 / CheckPacer.FACTOR)
    pacer.checked(1.2)
    assert pacer.hold(1.2, deadline=1.3) == pytest.approx(0.1)
    assert pacer.hold(1.4, deadline=1.3) == 0
