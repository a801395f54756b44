"""The pause after a database error counts from the failed attempt's start."""

from __future__ import annotations

import time

import pytest

from omnispindle._maintenance.sweeper import MAX_ERROR_BACKOFF, error_pause


def test_a_fast_failure_waits_a_doubling_pause_up_to_the_cap():
    now = time.monotonic()
    pauses = [error_pause(errors, now) for errors in (1, 2, 3)]
    assert pauses[0] == pytest.approx(0.1, abs=0.01)
    assert pauses[1] == pytest.approx(0.2, abs=0.01)
    assert pauses[2] == pytest.approx(0.4, abs=0.01)
    assert error_pause(30, time.monotonic()) == pytest.approx(MAX_ERROR_BACKOFF, abs=0.01)


def test_an_attempt_that_already_waited_the_pause_is_followed_at_once():
    """A call that waited out the pool's timeout during an outage: another pause on
    top left no connect attempt for seconds after the database was back."""
    assert error_pause(30, time.monotonic() - MAX_ERROR_BACKOFF) == 0.0
    assert error_pause(30, time.monotonic() - 2.0) == pytest.approx(
        MAX_ERROR_BACKOFF - 2.0, abs=0.01
    )
