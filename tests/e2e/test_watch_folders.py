"""Watch folders that come and go: deleted, moved away, or not there yet at start (a late mount).

The rescan is set to an hour, so a file found within seconds proves the folder was watched
again (or scanned when it came back), not picked up by the safety net.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from speechkit_local import LocalSpeechKit
from tests.e2e.harness import Daemon, wait_for
from tests.e2e.test_pipeline import MONO_TXT, done_outputs
from tests.fixtures_audio import fixture_path

RESCAN_SECONDS = 3600  # the safety net must not be what finds the files
PROMPT_SECONDS = 15.0  # a folder check every 2 s, a 5 s idle wake, settling and recognition


def log_line(daemon: Daemon, *words: str) -> str:
    """The first log line of this run holding every word (waits for it)."""

    def found() -> str | None:
        lines = daemon.log()[daemon.log_offset :].splitlines()
        return next((line for line in lines if all(word in line for word in words)), None)

    line: str = wait_for(found, f"a log line with {words}", timeout=PROMPT_SECONDS)
    return line


def transcribed_promptly(folder: Path, name: str) -> str:
    """NAME.txt within PROMPT_SECONDS (far below RESCAN_SECONDS); its text."""
    wait_for((folder / f"{name}.txt").exists, f"{name}.txt", timeout=PROMPT_SECONDS)
    return done_outputs(folder, name)[0]


def test_an_inbox_deleted_and_created_again_is_watched_again(
    make_daemon: Callable[..., Daemon], inbox: Path, speechkit: LocalSpeechKit
) -> None:
    with make_daemon(rescan_seconds=RESCAN_SECONDS).start() as daemon:
        log_line(daemon, "first scan done")
        shutil.rmtree(inbox)
        inbox.mkdir()  # on ext4 often with the same inode number: only the ended watch tells
        shutil.copy(fixture_path("mono.ogg"), inbox / "meanwhile.ogg")  # before the re-watch
        log_line(daemon, str(inbox), "watching it again")
        shutil.copy(fixture_path("mono.ogg"), inbox / "after.ogg")  # seen by the new watch
        assert transcribed_promptly(inbox, "meanwhile") == MONO_TXT
        assert transcribed_promptly(inbox, "after") == MONO_TXT
        assert daemon.process is not None
        assert daemon.process.poll() is None  # a deleted folder is not a dead observer
        assert daemon.stop() == 0
    # Same content twice: one recognition, reused for the second name.
    assert speechkit.stats()["submissions"] == 1


def test_an_inbox_moved_away_is_let_go_and_a_new_one_watched(
    make_daemon: Callable[..., Daemon], inbox: Path, tmp_path: Path, speechkit: LocalSpeechKit
) -> None:
    moved = tmp_path / "inbox-of-last-week"
    with make_daemon(rescan_seconds=RESCAN_SECONDS).start() as daemon:
        log_line(daemon, "first scan done")
        os.rename(inbox, moved)  # the inotify watch follows the folder to its new name
        inbox.mkdir()  # another folder (another inode) under the watched name
        shutil.copy(fixture_path("mono.ogg"), moved / "stale.ogg")  # no longer a watched folder
        log_line(daemon, str(inbox), "is another folder now", "watching it again")
        shutil.copy(fixture_path("stereo.ogg"), inbox / "call.ogg")
        transcribed_promptly(inbox, "call")
        status = daemon.status()
        assert status["waiting_for_folders"] == []
        assert daemon.stop() == 0
    assert not (moved / "stale.txt").exists()
    assert speechkit.stats()["submissions"] == 1


def test_a_folder_missing_at_start_is_waited_for_then_watched(
    make_daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    late = tmp_path / "mnt" / "late"
    daemon = make_daemon(watch_dirs=[late], rescan_seconds=RESCAN_SECONDS)
    with daemon.start():
        assert not daemon.process_exited()
        warning = log_line(daemon, "watch[0].path", str(late), "does not exist")
        assert str(daemon.config) in warning
        status = daemon.status()
        assert status["waiting_for_folders"] == [{"path": str(late), "key": "watch[0].path"}]
        text = daemon.cli("status").stdout
        assert f'waiting for watch folder "{late}" (watch[0].path)' in text
        late.mkdir(parents=True)  # the mount arrives
        log_line(daemon, str(late), "exists now", "watching it")
        shutil.copy(fixture_path("mono.ogg"), late / "call.ogg")
        assert transcribed_promptly(late, "call") == MONO_TXT
        assert daemon.status()["waiting_for_folders"] == []
        assert daemon.stop() == 0
