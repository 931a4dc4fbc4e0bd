"""Steps of the wall clock: seeing one, moving quota windows and pauses, the test clock hook."""

from __future__ import annotations

import pytest

from daemon import crashpoints, quota, scheduling

HOUR = 3600.0


def test_the_first_look_is_no_step() -> None:
    assert scheduling.wall_clock_step(None, 1_700_000_000.0) == 0.0


def test_a_jump_beyond_the_tolerance_is_a_step_with_its_sign() -> None:
    assert scheduling.wall_clock_step(1000.0, 1000.0 - HOUR) == -HOUR
    assert scheduling.wall_clock_step(1000.0, 1000.0 + 90.0) == 90.0


def test_slewing_and_reading_jitter_are_not_steps() -> None:
    tolerance = scheduling.CLOCK_STEP_TOLERANCE_SECONDS
    assert scheduling.wall_clock_step(1000.0, 1000.0 + 0.5) == 0.0
    assert scheduling.wall_clock_step(1000.0, 1000.0 - tolerance) == 0.0
    assert scheduling.wall_clock_step(1000.0, 1000.0 - tolerance - 1.0) == -(tolerance + 1.0)


def test_a_quota_window_moved_back_with_the_clock_frees_its_slots_on_time() -> None:
    window = quota.SlidingWindow(limit=2, window=HOUR)
    assert window.acquire(10_000.0) == 0.0
    assert window.acquire(10_100.0) == 0.0
    assert window.acquire(10_200.0) == HOUR - 200.0  # full: the first frees at 13,600
    # The clock goes back an hour at 10,200: it now reads 6,600.
    window.shift(-HOUR, now=6_600.0)
    assert window.acquire(6_600.0) == HOUR - 200.0  # the same wait, not an hour more
    assert window.acquire(6_400.0 + HOUR) == 0.0


def test_a_quota_window_moved_forward_keeps_its_calls_in_the_hour() -> None:
    window = quota.SlidingWindow(limit=1, window=HOUR)
    assert window.acquire(10_000.0) == 0.0
    window.shift(HOUR, now=10_010.0 + HOUR)
    assert window.used(10_010.0 + HOUR) == 1  # without the shift it would have left the window


def test_no_call_is_left_in_the_future() -> None:
    window = quota.SlidingWindow(limit=3, window=HOUR)
    window.acquire(10_000.0)
    window.acquire(10_050.0)
    window.shift(0.0, now=10_020.0)  # a call taken with a clock read before a backward step
    assert window.acquire(10_020.0) == 0.0
    assert window.acquire(10_020.0) == 10_000.0 + HOUR - 10_020.0
    assert window.acquire(10_000.0 + HOUR) == 0.0  # the first call left the window
    # The call of 10,050 counts as made at 10,020: it frees its slot then, not 30 s later.
    assert window.acquire(10_000.0 + HOUR) == 20.0


def test_a_pause_lasts_as_long_after_a_step_and_no_pause_stays_none() -> None:
    pause = quota.Pause()
    pause.shift(-HOUR)
    assert pause.blocked_until(0.0, 60.0) is None
    assert pause.pause(10_060.0)
    pause.shift(-HOUR)
    assert pause.blocked_until(10_000.0 - HOUR, 60.0) == 10_060.0 - HOUR


class FakeClocks:
    def __init__(self) -> None:
        self.wall = 1_700_000_000.0
        self.steady = 50.0

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.steady += seconds


def test_the_test_hook_steps_the_wall_clock_once_after_the_given_time() -> None:
    clocks = FakeClocks()
    clock = crashpoints.wall_clock(
        {crashpoints.CLOCK_STEP_VARIABLE: "5:-3600"},
        wall=lambda: clocks.wall,
        monotonic=lambda: clocks.steady,
    )
    start = clocks.wall
    assert clock() == start
    clocks.advance(4.9)
    assert clock() == pytest.approx(start + 4.9)
    clocks.advance(0.2)
    assert clock() == pytest.approx(start + 5.1 - HOUR)
    clocks.advance(100.0)
    assert clock() == pytest.approx(start + 105.1 - HOUR)


def test_without_the_hook_the_wall_clock_is_the_real_one() -> None:
    def wall() -> float:
        return 1.0

    assert crashpoints.wall_clock({}, wall=wall) is wall


def test_a_malformed_hook_value_says_what_is_expected() -> None:
    with pytest.raises(ValueError, match="AFTER_SECONDS:STEP_SECONDS"):
        crashpoints.wall_clock({crashpoints.CLOCK_STEP_VARIABLE: "soon"})
