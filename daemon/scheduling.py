"""When to do things: status checks of pending operations and retries after transient failures.

Pure functions of their arguments (the clock and randomness are passed in), unit-tested alone.
"""

from __future__ import annotations

import datetime
import random
from collections.abc import Mapping

MIN_FIRST_CHECK_SECONDS = 1.0  # even a one-second file needs a moment on the service side
FIRST_CHECK_MARGIN = 1.1  # check a little after the expected time, not a little before it
FIRST_CHECK_SLACK_SECONDS = 0.5  # queueing and clock skew on short files
LATER_CHECK_FRACTION = 0.25  # after a miss, wait a quarter of the expected time, then double
MIN_LATER_CHECK_SECONDS = 2.0  # never the documentation's once-a-second loop
RETRY_BASE_SECONDS = 1.0  # first retry after a transient failure
RETRY_CAP_SECONDS = 300.0  # retries of a long outage settle at once per five minutes
RETRY_AFTER_CAP_SECONDS = 3600.0  # a Retry-After beyond an hour is treated as an hour


def expected_processing_seconds(
    duration_seconds: float, channels: int, seconds_per_minute: float
) -> float:
    """The service's documented speed: about `seconds_per_minute` per audio minute per channel."""
    return max(duration_seconds, 0.0) / 60.0 * seconds_per_minute * max(channels, 1)


def first_check_delay(duration_seconds: float, channels: int, seconds_per_minute: float) -> float:
    """Seconds from submission to the first status check: when the result can be expected."""
    expected = expected_processing_seconds(duration_seconds, channels, seconds_per_minute)
    return max(MIN_FIRST_CHECK_SECONDS, expected * FIRST_CHECK_MARGIN + FIRST_CHECK_SLACK_SECONDS)


def later_check_delay(
    checks_done: int,
    duration_seconds: float,
    channels: int,
    seconds_per_minute: float,
    max_interval: float,
) -> float:
    """Seconds until the next check after `checks_done` checks found the operation unfinished."""
    expected = expected_processing_seconds(duration_seconds, channels, seconds_per_minute)
    base = max(MIN_LATER_CHECK_SECONDS, expected * LATER_CHECK_FRACTION)
    exponent = max(checks_done - 1, 0)
    return min(max_interval, base * (2.0 ** min(exponent, 30)))


def retry_delay(
    attempts: int,
    rng: random.Random,
    retry_after: float | None = None,
    *,
    cap: float = RETRY_CAP_SECONDS,
) -> float:
    """Exponential backoff with jitter after `attempts` consecutive transient failures.

    The jitter spreads many files that failed together (an outage) so they do not return together.
    A server's `Retry-After` is a floor: we never come back earlier than it asked.
    """
    ceiling = min(cap, RETRY_BASE_SECONDS * (2.0 ** min(max(attempts - 1, 0), 30)))
    delay = ceiling / 2 + rng.uniform(0, ceiling / 2)
    if retry_after is not None:
        delay = max(delay, min(retry_after, RETRY_AFTER_CAP_SECONDS))
    return delay


LEARNING_WEIGHT = 0.2  # each finished operation moves the estimate a fifth of the way
MIN_SPEED_FACTOR = 0.2  # never expect the service more than 5x faster than documented
MAX_SPEED_FACTOR = 50.0  # deferred-general may take hours; beyond that, backoff takes over
MIN_LEARNING_SECONDS = 10.0  # shorter operations say little: the service's times are whole seconds


def parse_time(value: object) -> float | None:
    """Seconds since the epoch from an RFC 3339 time such as "2026-11-25T10:00:03Z"."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    return moment.timestamp()


def observed_speed_factor(
    operation: Mapping[str, object],
    duration_seconds: float,
    channels: int,
    seconds_per_minute: float,
) -> float | None:
    """How much slower (>1) or faster (<1) than expected the service took for this operation.

    From the operation's own `createdAt` and `modifiedAt` (its completion); None when the
    operation is too short to tell or the times are missing.
    """
    expected = expected_processing_seconds(duration_seconds, channels, seconds_per_minute)
    created = parse_time(operation.get("createdAt"))
    finished = parse_time(operation.get("modifiedAt"))
    if expected < MIN_LEARNING_SECONDS or created is None or finished is None:
        return None
    return max(MIN_SPEED_FACTOR, min(MAX_SPEED_FACTOR, (finished - created) / expected))


def learn(current: float, observation: float | None) -> float:
    """The updated speed factor: an exponentially weighted average of observations."""
    if observation is None:
        return current
    updated = current + LEARNING_WEIGHT * (observation - current)
    return max(MIN_SPEED_FACTOR, min(MAX_SPEED_FACTOR, updated))


# NTP slews small errors away and steps only by more than 0.128 s; a jump beyond this tolerance
# is a step (a manual `date -s`, a VM restored from a snapshot, a late first NTP sync), far below
# a delay anyone would notice, and far above the microseconds between two clock readings.
CLOCK_STEP_TOLERANCE_SECONDS = 30.0


def wall_clock_step(
    previous_offset: float | None,
    offset: float,
    tolerance: float = CLOCK_STEP_TOLERANCE_SECONDS,
) -> float:
    """How far the wall clock jumped since the last look (negative: back), or 0.0.

    `offset` is the wall clock minus a clock that never jumps (seconds since boot, which keeps
    counting through a suspend): it stays put while both run, and moves by exactly the step when
    someone sets the wall clock. Due times are wall-clock times (they must survive a restart),
    so after a step they move by the same amount.
    """
    if previous_offset is None:
        return 0.0
    step = offset - previous_offset
    return step if abs(step) > tolerance else 0.0
