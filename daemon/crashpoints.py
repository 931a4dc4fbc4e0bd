"""Named crash points for the crash-test suite: `SPEECHKIT_WATCH_CRASH_AT=NAME` makes the daemon
SIGKILL itself when it reaches step NAME. Used only by tests; unset, each call is one dict lookup.
"""

from __future__ import annotations

import os
import signal

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
    "before_delete",  # state "done", the object not yet deleted
)


def crash_point(name: str) -> None:
    if os.environ.get(ENVIRONMENT_VARIABLE) == name:
        os.kill(os.getpid(), signal.SIGKILL)
