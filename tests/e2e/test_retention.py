"""Retention and big trees, as an operator sees them: audio kept a month after its transcript,
then deleted; failed files moved after a week; the state file forgetting files long gone; and a
folder beyond the inotify limit still transcribed, by polling.

Time is injected with the test-only SPEECHKIT_WATCH_CLOCK_STEP hook (a restart a month later);
the inotify limit is lowered for real in a user namespace of the daemon's own (`unshare -Ur`),
or, where the machine allows none, simulated at the watch call (SPEECHKIT_WATCH_INOTIFY_LIMIT).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from daemon.crashpoints import CLOCK_STEP_VARIABLE, WATCH_LIMIT_VARIABLE
from tests.e2e import harness
from tests.e2e.harness import Daemon, wait_for
from tests.e2e.test_pipeline import MONO_TXT, done_outputs
from tests.fixtures_audio import fixture_path

DAY = 86400


def test_audio_goes_a_month_after_its_transcript_and_long_gone_files_are_forgotten(
    make_daemon: Callable[..., Daemon], inbox: Path, tmp_path: Path
) -> None:
    failed = tmp_path / "failed"
    notes = tmp_path / "notes"
    notes.mkdir()
    daemon = make_daemon(
        watch_dirs=[inbox, notes],
        watch=[
            {"path": str(inbox), "after_done": "delete", "after_done_days": 30,
             "after_failed": "move", "after_failed_days": 7, "failed_move_to": str(failed)},
            {"path": str(notes)},  # keep: the person deletes the audio by hand
        ],
        state_retention_days=30,
    )  # fmt: skip
    shutil.copy(fixture_path("mono.ogg"), inbox / "call.ogg")
    shutil.copy(fixture_path("mono.ogg"), notes / "memo.ogg")  # a copy: reuses call's result
    (inbox / "broken.ogg").write_bytes(b"this is not a recording")
    with daemon.start():
        assert done_outputs(inbox, "call")[0] == MONO_TXT
        done_outputs(notes, "memo")
        wait_for((inbox / "broken.error.json").exists, "the failure of broken.ogg")
        waiting = daemon.wait_for_count("done", 2)["retention"]
        assert waiting["waiting"] == 2  # call.ogg and broken.ogg; memo.ogg's folder keeps
        assert daemon.stop() == 0
    assert (inbox / "call.ogg").exists()  # kept: 30 days are not over
    assert (inbox / "broken.ogg").exists()  # kept: 7 days are not over
    for leftover in notes.glob("memo.*"):
        leftover.unlink()  # the person tidies up the audio and its transcript
    # A month later (the daemon's wall clock 31 days ahead from its start).
    with daemon.start(extra_env={CLOCK_STEP_VARIABLE: f"0:{31 * DAY}"}):
        wait_for(lambda: not (inbox / "call.ogg").exists(), "call.ogg to be deleted")
        wait_for((failed / "broken.ogg").exists, "broken.ogg to be moved")
        wait_for(lambda: "forgot 1 file(s)" in daemon.log(), "the row of memo.ogg forgotten")
        status = daemon.status()
        assert daemon.stop() == 0
    assert (inbox / "call.txt").read_text(encoding="utf-8") == MONO_TXT  # outputs stay
    assert (inbox / "call.json").exists()
    assert (failed / "broken.error.json").exists()  # the reason moves along
    assert not (inbox / "broken.error.json").exists()
    assert (status["counts"]["done"], status["counts"]["failed"]) == (1, 1)
    log = daemon.log()
    assert "(after_done: delete, 31 days after its end)" in log
    assert "(after_failed: move, 31 days after its end)" in log
    assert "forgot 1 file(s) gone for more than 30 days (state_retention_days)" in log


# In a user namespace of its own, the daemon gets this many inotify watches: its recursive
# watch folder and the one subfolder it has at start; a subfolder made later is beyond the limit.
NAMESPACE_WATCHES = 2


def lowered_limit_prefix() -> list[str] | None:
    """`unshare -Ur` with the inotify watch limit lowered, where this machine allows user
    namespaces (the daemon then runs in one, as root of nothing but it); else None."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return None
    script = f'echo {NAMESPACE_WATCHES} > /proc/sys/user/max_inotify_watches && exec "$@"'
    prefix = [unshare, "-Ur", "sh", "-c", script, "sh"]
    probe = subprocess.run([*prefix, "true"], capture_output=True, check=False, timeout=10)
    return prefix if probe.returncode == 0 else None


def test_a_folder_beyond_the_inotify_limit_is_polled_and_its_files_transcribed(
    make_daemon: Callable[..., Daemon], inbox: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a real limit, the tree outgrows it while watched: watchdog cannot watch a new
    subfolder (it only logs that), and the folder is polled from then on. Where no user
    namespace can be made, the limit is simulated at the watch call at start instead."""
    (inbox / "2026").mkdir()
    prefix = lowered_limit_prefix()
    env = {}
    if prefix is None:
        env[WATCH_LIMIT_VARIABLE] = "ENOSPC"
    else:
        plain = harness.command
        monkeypatch.setattr(harness, "command", lambda: [*prefix, *plain()])
    # No rescan during the test: only the fallback can find the file.
    daemon = make_daemon(
        env=env, rescan_seconds=3600, watch=[{"path": str(inbox), "recursive": True}]
    )
    with daemon.start():
        wait_for(lambda: "first scan done" in daemon.log(), "the start-up scan")
        month = inbox / "2026" / "01"
        month.mkdir()
        shutil.copy(fixture_path("mono.ogg"), month / "memo.ogg")
        assert done_outputs(month, "memo")[0] == MONO_TXT
        assert daemon.stop() == 0
    log = daemon.log()
    [line] = [line for line in log.splitlines() if "cannot watch folder" in line]  # one line
    assert f'"{inbox}" with inotify (fs.inotify.max_user_watches: inotify watch limit' in line
    assert "sysctl -w fs.inotify.max_user_watches=" in line
    if prefix is not None:
        assert f"(now {NAMESPACE_WATCHES}, this config needs 3)" in line
        assert log.index("first scan done") < log.index("cannot watch folder")  # while watched
