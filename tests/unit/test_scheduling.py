"""When status checks and retries happen."""

from __future__ import annotations

import random

from daemon import scheduling


def test_first_check_waits_for_the_expected_processing_time() -> None:
    # 3 minutes of stereo at 10 s per minute per channel: 60 s expected.
    delay = scheduling.first_check_delay(180.0, 2, 10.0)
    assert 60.0 < delay <= 60.0 * 1.2 + 1.0


def test_first_check_of_a_tiny_file_is_not_immediate() -> None:
    assert scheduling.first_check_delay(0.5, 1, 10.0) >= scheduling.MIN_FIRST_CHECK_SECONDS


def test_later_checks_back_off_to_the_cap_and_never_poll_every_second() -> None:
    delays = [scheduling.later_check_delay(n, 600.0, 1, 10.0, 300.0) for n in range(1, 12)]
    assert delays == sorted(delays)
    assert delays[0] >= scheduling.MIN_LATER_CHECK_SECONDS
    assert delays[-1] == 300.0
    short = [scheduling.later_check_delay(n, 1.0, 1, 10.0, 300.0) for n in range(1, 4)]
    assert min(short) >= 2.0


def test_checks_for_a_long_file_stay_far_below_the_hourly_quota() -> None:
    # A 4-hour mono file: the documentation's sample would poll 3,600 times an hour.
    duration, elapsed, checks = 4 * 3600.0, 0.0, 0
    elapsed += scheduling.first_check_delay(duration, 1, 10.0)
    checks += 1
    while elapsed < 3 * 3600:
        elapsed += scheduling.later_check_delay(checks, duration, 1, 10.0, 300.0)
        checks += 1
    assert checks < 40


def test_retry_delay_grows_with_jitter_and_honours_retry_after() -> None:
    rng = random.Random(7)
    first = [scheduling.retry_delay(1, rng) for _ in range(50)]
    assert all(0.5 <= delay <= 1.0 for delay in first)
    assert len({round(delay, 6) for delay in first}) > 40  # jittered, not identical
    later = [scheduling.retry_delay(6, rng) for _ in range(50)]
    assert all(16.0 <= delay <= 32.0 for delay in later)
    capped = scheduling.retry_delay(50, rng)
    assert capped <= scheduling.RETRY_CAP_SECONDS
    assert scheduling.retry_delay(1, rng, retry_after=42.0) == 42.0
    assert scheduling.retry_delay(1, rng, retry_after=10**9) == scheduling.RETRY_AFTER_CAP_SECONDS


def test_the_observed_speed_is_read_from_the_operation_times() -> None:
    operation = {"createdAt": "2026-11-25T10:00:00Z", "modifiedAt": "2026-11-25T10:00:30Z"}
    # 3 minutes mono at 10 s/min: 30 s expected, 30 s taken.
    assert scheduling.observed_speed_factor(operation, 180.0, 1, 10.0) == 1.0
    slow = {"createdAt": "2026-11-25T10:00:00Z", "modifiedAt": "2026-11-25T10:02:00Z"}
    assert scheduling.observed_speed_factor(slow, 180.0, 1, 10.0) == 4.0
    assert scheduling.observed_speed_factor(operation, 3.0, 1, 10.0) is None  # too short to tell
    assert scheduling.observed_speed_factor({"createdAt": "soon"}, 180.0, 1, 10.0) is None


def test_learning_moves_towards_what_is_observed_within_bounds() -> None:
    factor = 1.0
    for _ in range(30):
        factor = scheduling.learn(factor, 3.0)
    assert 2.9 < factor <= 3.0
    assert scheduling.learn(factor, None) == factor
    assert scheduling.learn(1.0, 1000.0) <= scheduling.MAX_SPEED_FACTOR
    # A service that slowed down four-fold: after learning, the first check waits for it.
    assert scheduling.first_check_delay(180.0, 1, 10.0 * factor) > 3 * 30.0
