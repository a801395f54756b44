"""Auto-scaling decides without a clock or a database: its bounds, its pace, its steps."""

from __future__ import annotations

import queue
import threading
import time

import pytest

from omnispindle._core.scaling import NEVER, Bounds, Scaler, bounds, grown
from omnispindle._worker._autoscale import PoolSize
from omnispindle._worker._threads import ExecutorThreads
from omnispindle._worker.settings import worker_settings
from omnispindle.errors import ValidationError

LIMITS = (1, 1000)
WAIT_S = 10


def test_no_pair_is_a_fixed_pool():
    assert bounds("concurrency", 4, None, None, LIMITS) is None


def test_the_pool_starts_at_its_minimum_unless_told():
    assert bounds("concurrency", None, 2, 8, LIMITS) == Bounds(2, 8, 2)
    assert bounds("concurrency", 5, 2, 8, LIMITS) == Bounds(2, 8, 5)


@pytest.mark.parametrize(
    ("size", "low", "high", "message"),
    [
        (None, 2, None, "min_concurrency and max_concurrency go together: min_concurrency was"),
        (None, None, 8, "max_concurrency was given alone"),
        (None, 9, 8, "min_concurrency (9) must not be above max_concurrency (8)"),
        (None, 0, 8, "min_concurrency must be"),
        (None, 1, 1001, "max_concurrency must be"),
        (9, 1, 8, "concurrency (9) is where an auto-scaled pool starts"),
        (1, 2, 8, "concurrency (1) is where an auto-scaled pool starts"),
    ],
)
def test_contradictions_are_refused_by_name(size, low, high, message):
    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        bounds("concurrency", size, low, high, LIMITS)


def test_command_line_options_are_named_as_typed():
    with pytest.raises(ValidationError, match="--min-processes and --max-processes go together"):
        bounds("processes", None, 2, None, (1, 64), options=True)
    with pytest.raises(ValidationError, match=r"--processes \(5\) is where"):
        bounds("processes", 5, 1, 3, (1, 64), options=True)


def test_worker_settings_keep_a_fixed_pool_without_the_pair():
    common = {
        "name": "w",
        "poll_interval": 1.0,
        "lease_timeout": 30.0,
        "heartbeat_interval": None,
        "shutdown_timeout": 30.0,
        "sweep_interval": None,
        "dead_worker_after": 60.0,
        "schedule_interval": None,
        "retention_seconds": None,
    }
    fixed = worker_settings(concurrency=None, **common)
    assert (fixed.concurrency, fixed.scaling) == (1, None)
    scaled = worker_settings(concurrency=None, min_concurrency=2, max_concurrency=6, **common)
    assert (scaled.concurrency, scaled.scaling) == (2, Bounds(2, 6, 2))
    with pytest.raises(ValidationError, match="scale_down_after"):
        worker_settings(concurrency=None, scale_down_after=0, **common)


@pytest.mark.parametrize("heartbeat", [30.0, 60.0, 1e10])
def test_a_heartbeat_interval_as_long_as_the_lease_is_refused(heartbeat):
    """Leases would lapse between heartbeats: the sweeper would hand running tasks on."""
    settings = {
        "concurrency": None,
        "name": "w",
        "poll_interval": 1.0,
        "lease_timeout": 30.0,
        "shutdown_timeout": 30.0,
        "sweep_interval": None,
        "dead_worker_after": 60.0,
        "schedule_interval": None,
        "retention_seconds": None,
    }
    with pytest.raises(ValidationError, match=r"heartbeat_interval \(.* s\) must be shorter than"):
        worker_settings(heartbeat_interval=heartbeat, **settings)
    assert worker_settings(heartbeat_interval=29.0, **settings).heartbeat_interval == 29.0


@pytest.mark.parametrize(
    "setting",
    [
        "poll_interval",
        "shutdown_timeout",
        "sweep_interval",
        "dead_worker_after",
        "schedule_interval",
        "scale_down_after",
    ],
)
def test_seconds_too_many_for_a_wait_are_refused(setting):
    """1e300 s passed the checks, then overflowed deep inside: a stop's timer thread died
    with OverflowError at every statement, a sweep interval's lease made the sweep fail
    with 'interval out of range'."""
    settings = {
        "concurrency": None,
        "name": "w",
        "poll_interval": 1.0,
        "lease_timeout": 30.0,
        "heartbeat_interval": None,
        "shutdown_timeout": 30.0,
        "sweep_interval": 1.0,
        "dead_worker_after": 60.0,
        "schedule_interval": 1.0,
        "retention_seconds": None,
    }
    with pytest.raises(ValidationError, match=f"{setting} must be at most 1e\\+09 seconds"):
        worker_settings(**{**settings, setting: 1e300})
    assert worker_settings(**{**settings, setting: 1e9}).name == "w"


def test_steps_grow_by_half_at_least_one_up_to_the_maximum():
    sizes = [1]
    while sizes[-1] < 8:
        sizes.append(grown(sizes[-1], 8))
    assert sizes == [1, 2, 3, 4, 6, 8]


def scaler(low=1, high=8, start=1):
    return Scaler(Bounds(low, high, start), grow_after=1.0, shrink_after=10.0)


def test_a_pool_short_of_room_grows_one_step_per_pace_not_per_observation():
    pool = scaler()
    assert pool.observe(0.0, busy=1, short=True) == 1
    assert pool.observe(0.5, busy=1, short=True) == 1
    assert pool.observe(1.0, busy=1, short=True) == 2
    assert pool.observe(1.5, busy=2, short=True) == 2  # the pace starts afresh here
    assert pool.observe(2.0, busy=2, short=True) == 2
    assert pool.observe(2.5, busy=2, short=True) == 3


def test_a_moment_not_short_restarts_the_pace_of_growth():
    pool = scaler()
    pool.observe(0.0, busy=1, short=True)
    pool.observe(0.9, busy=1, short=False)
    assert pool.observe(1.5, busy=1, short=True) == 1
    assert pool.observe(2.5, busy=1, short=True) == 2


def test_growth_stops_at_the_maximum():
    pool = scaler(high=3, start=3)
    assert pool.observe(0.0, busy=3, short=True) == 3
    assert pool.observe(100.0, busy=3, short=True) == 3
    assert pool.next_decision() == NEVER


def test_idle_room_shrinks_the_pool_to_the_most_used_after_the_window():
    pool = scaler(start=8)
    assert pool.observe(0.0, busy=2, short=False) == 8
    assert pool.observe(5.0, busy=5, short=False) == 8
    assert pool.next_decision() == 10.0
    assert pool.observe(10.0, busy=1, short=False) == 5


def test_a_full_pool_restarts_the_idle_window():
    pool = scaler(start=8)
    pool.observe(0.0, busy=0, short=False)
    pool.observe(9.0, busy=8, short=False)
    assert pool.observe(12.0, busy=0, short=False) == 8
    assert pool.observe(22.0, busy=0, short=False) == 1


def test_an_idle_pool_never_shrinks_below_its_minimum():
    pool = scaler(low=2, start=4)
    pool.observe(0.0, busy=0, short=False)
    assert pool.observe(10.0, busy=0, short=False) == 2
    assert pool.observe(100.0, busy=0, short=False) == 2
    assert pool.next_decision() == NEVER


def test_a_worker_grows_only_after_two_claims_in_a_row_fill_every_free_slot():
    pool = PoolSize(Bounds(1, 8, 1), shrink_after=10.0)
    pool.claimed(free=1, got=1)  # one long task: no backlog seen yet
    assert pool.observe(0.0, busy=1) == 1
    assert pool.observe(5.0, busy=1) == 1
    pool.claimed(free=1, got=1)
    assert pool.observe(5.0, busy=1) == 1
    assert pool.new_wake() == 6.0
    assert pool.new_wake() is None  # told once
    assert pool.observe(6.0, busy=1) == 2
    pool.claimed(free=1, got=0)
    assert pool.observe(7.0, busy=1) == 2
    assert pool.observe(17.0, busy=1) == 1


def live_threads(prefix):
    return sum(thread.name.startswith(prefix) for thread in threading.enumerate())


def poll(condition, timeout=WAIT_S):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def test_executor_threads_grow_and_shrink_to_a_size():
    threads = ExecutorThreads(1, "test-resize")
    release = threading.Event()
    started: queue.SimpleQueue = queue.SimpleQueue()
    ended: queue.SimpleQueue = queue.SimpleQueue()

    def hold():
        started.put(threading.current_thread().name)
        release.wait(WAIT_S)

    threads.resize(3)
    for _ in range(3):
        threads.submit(ended.put, hold)
    names = {started.get(timeout=WAIT_S) for _ in range(3)}
    assert len(names) == 3, "three calls ran at once"
    release.set()
    for _ in range(3):
        ended.get(timeout=WAIT_S)
    threads.resize(1)
    poll(lambda: live_threads("test-resize") == 1)
    threads.shutdown()
