"""Steps of the wall clock: due times move with it, so nothing stalls for the size of the step.

The daemon's wall clock is stepped by the test-only hook SPEECHKIT_WATCH_CLOCK_STEP (the servers
keep the real clock, as a remote service would); a step while the daemon is stopped is made by
writing the times a clock an hour ahead would have written.
"""

from __future__ import annotations

import shutil
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from daemon.crashpoints import CLOCK_STEP_VARIABLE
from speechkit_local import LocalSpeechKit
from tests.e2e.harness import Daemon, wait_for
from tests.e2e.test_pipeline import MONO_TXT, done_outputs
from tests.fixtures_audio import fixture_path

HOUR = 3600.0
# 150 s per audio minute: the 4 s clip's first status check comes 11.5 s after its submission
# (4/60 x 150 x 1.1 + 0.5), and the server has the result after 10 s.
SLOW_SECONDS_PER_MINUTE = 150.0
STEP_AFTER_SECONDS = 5.0  # after the submission (about 1 s after start), before that check
DEADLINE_SECONDS = 30.0  # the check is 11.5 s after submission; a stall would be an hour


def test_a_wall_clock_set_back_an_hour_does_not_stall_a_pending_status_check(
    make_daemon: Callable[..., Daemon], inbox: Path, speechkit: LocalSpeechKit
) -> None:
    speechkit.set_config(seconds_per_minute=SLOW_SECONDS_PER_MINUTE)
    shutil.copy(fixture_path("mono.ogg"), inbox / "memo.ogg")  # the start-up scan finds it
    daemon = make_daemon(
        polling={"seconds_per_minute": SLOW_SECONDS_PER_MINUTE},
        env={CLOCK_STEP_VARIABLE: f"{STEP_AFTER_SECONDS}:{-HOUR}"},
    )
    started = time.monotonic()
    with daemon.start():
        wait_for(
            (inbox / "memo.txt").exists, "the transcript despite the clock step",
            timeout=DEADLINE_SECONDS - (time.monotonic() - started),
        )  # fmt: skip
        assert done_outputs(inbox, "memo")[0] == MONO_TXT
        log = daemon.log()
        step_line = "the wall clock stepped back by 3600 s; due times moved with it"
        assert step_line in log
        # The step came while the operation was pending, before its first status check.
        assert log.index("submitted ") < log.index(step_line)
        assert speechkit.stats()["submissions"] == 1
        assert daemon.stop() == 0


def test_times_written_before_the_clock_was_set_back_while_stopped_are_pulled_in(
    make_daemon: Callable[..., Daemon], inbox: Path, tmp_path: Path, speechkit: LocalSpeechKit
) -> None:
    speechkit.set_config(seconds_per_minute=SLOW_SECONDS_PER_MINUTE)
    daemon = make_daemon(polling={"seconds_per_minute": SLOW_SECONDS_PER_MINUTE})
    with daemon.start():
        shutil.copy(fixture_path("mono.ogg"), inbox / "memo.ogg")
        daemon.wait_for_count("pending", 1)
        assert daemon.stop() == 0
    # As if it all ran with a clock an hour ahead, which was then set right while stopped.
    db = sqlite3.connect(tmp_path / "state" / "state.db")
    db.execute(
        "UPDATE files SET due_at = due_at + 3600, submitted_at = submitted_at + 3600, "
        "updated_at = updated_at + 3600"
    )
    db.execute("UPDATE api_calls SET at = at + 3600")
    db.commit()
    db.close()
    restarted = time.monotonic()
    with daemon.start():
        wait_for(
            (inbox / "memo.txt").exists, "the transcript after the restart",
            timeout=DEADLINE_SECONDS - (time.monotonic() - restarted),
        )  # fmt: skip
        assert done_outputs(inbox, "memo")[0] == MONO_TXT
        assert "due times of 1 unfinished file(s) moved back with it" in daemon.log()
        assert speechkit.stats()["submissions"] == 1
        assert daemon.stop() == 0
    db = sqlite3.connect(tmp_path / "state" / "state.db")
    try:
        latest_call = db.execute("SELECT MAX(at) FROM api_calls").fetchone()[0]
    finally:
        db.close()
    assert latest_call <= time.time() + 1.0  # no call is left an hour in the future
