"""Named crash points for the crash-test suite: `SPEECHKIT_WATCH_CRASH_AT=NAME` makes the daemon
SIGKILL itself when it reaches step NAME. Used only by tests; unset, each call is one dict lookup.

Also test-only: `SPEECHKIT_WATCH_CLOCK_STEP=AFTER:STEP` makes the daemon's wall clock jump by STEP
seconds (negative: back) once, AFTER seconds after start, as `date -s` would; and
`SPEECHKIT_WATCH_INOTIFY_LIMIT=ENOSPC` (or `EMFILE`) makes every inotify watch call fail as it does
when `fs.inotify.max_user_watches` (`max_user_instances`) is used up.
"""

from __future__ import annotations

import errno
import os
import signal
import time
from collections.abc import Callable, Mapping

ENVIRONMENT_VARIABLE = "SPEECHKIT_WATCH_CRASH_AT"

# Every named point, in pipeline order (the tests iterate over this).
POINTS = (
    "after_hash",  # checked and hashed, nothing uploaded
    "after_upload",  # object stored, state still "uploading"
    "before_submit",  # state "submitting" committed, POST not sent
    "after_submit",  # the service accepted: the documented gap before the id is committed
    "after_commit",  # operation id committed
    "before_outputs",  # result fetched, nothing written
    "output_written",  # one output written atomically, the next not yet
    "after_outputs",  # all outputs written, state still "pending"
    "before_forget",  # state "done", API v3's results not yet deleted from the service
    "before_delete",  # state "done", the object not yet deleted
)
# Reached with API v3 and no storage, in pipeline order: every point but the upload's.
INLINE_POINTS = tuple(point for point in POINTS if point != "after_upload")

# Reached only by recordings that are converted (not by Ogg Opus), so tested on their own.
CONVERSION_POINTS = ("mid_conversion",)  # part of the Ogg Opus written, in the work folder


# Test-only too: `SPEECHKIT_WATCH_PAUSE_AT=NAME:SECONDS` makes a step wait that long at point
# NAME (a step still in flight when the daemon is told to stop).
PAUSE_VARIABLE = "SPEECHKIT_WATCH_PAUSE_AT"


def crash_point(name: str) -> None:
    if os.environ.get(ENVIRONMENT_VARIABLE) == name:
        os.kill(os.getpid(), signal.SIGKILL)
    pause = os.environ.get(PAUSE_VARIABLE)
    if pause:
        point, _, seconds = pause.partition(":")
        if point == name:
            time.sleep(float(seconds or 0))


CLOCK_STEP_VARIABLE = "SPEECHKIT_WATCH_CLOCK_STEP"


def wall_clock(
    environ: Mapping[str, str] = os.environ,
    *,
    wall: Callable[[], float] = time.time,
    monotonic: Callable[[], float] = time.monotonic,
) -> Callable[[], float]:
    """The daemon's wall clock: `wall`, or with the clock step variable set, one that jumps."""
    value = environ.get(CLOCK_STEP_VARIABLE)
    if not value:
        return wall
    after_text, _, step_text = value.partition(":")
    try:
        after, step = float(after_text), float(step_text)
    except ValueError:
        raise ValueError(
            f"{CLOCK_STEP_VARIABLE}={value!r}: expected AFTER_SECONDS:STEP_SECONDS"
        ) from None
    step_at = monotonic() + after

    def stepped() -> float:
        return wall() + (step if monotonic() >= step_at else 0.0)

    return stepped


WATCH_LIMIT_VARIABLE = "SPEECHKIT_WATCH_INOTIFY_LIMIT"
# The errors watchdog raises when inotify_add_watch / inotify_init hit a limit, word for word.
_WATCH_LIMIT_ERRORS = {
    "ENOSPC": OSError(errno.ENOSPC, "inotify watch limit reached"),
    "EMFILE": OSError(errno.EMFILE, "inotify instance limit reached"),
}


def simulated_watch_limit(environ: Mapping[str, str] = os.environ) -> None:
    """Raise what the inotify watch call raises at a limit, if the test variable asks for it."""
    value = environ.get(WATCH_LIMIT_VARIABLE)
    if value:
        error = _WATCH_LIMIT_ERRORS.get(value)
        if error is None:
            raise ValueError(f"{WATCH_LIMIT_VARIABLE}={value!r}: expected ENOSPC or EMFILE")
        raise OSError(error.errno, error.strerror)
