"""Crash safety: SIGKILL at every named step and at random instants loses nothing, pays once.

After every kill the daemon is restarted and, at the end, the invariants are checked: every file
has exactly the right transcript, one submission per distinct content (plus at most one per kill
that hit the documented gap between the service accepting and the id being committed), no temp
files, an empty bucket, and every row finished.
"""

from __future__ import annotations

import random
import shutil
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from daemon import crashpoints
from speechkit_local import LocalSpeechKit, devstack
from tests.e2e.harness import Daemon, leftovers, wait_for
from tests.e2e.test_pipeline import MONO_TXT, STEREO_TXT, UNICODE_TXT
from tests.fixtures_audio import fixture_path

FILES = {"one.ogg": ("mono.ogg", MONO_TXT), "two.ogg": ("stereo.ogg", STEREO_TXT)}
GAP_POINTS = {"after_submit"}  # the service accepted; the id is not yet committed
# API v2 has no results to delete: its before_forget is its before_delete.
V2_POINTS = tuple(point for point in crashpoints.POINTS if point != "before_forget")
# With storage, v3 differs from the inline run only in the upload and the object's deletion.
STORAGE_V3_POINTS = ("after_upload", "before_forget", "before_delete")


def drop(inbox: Path, files: dict[str, tuple[str, str]]) -> None:
    for name, (fixture, _) in files.items():
        shutil.copy(fixture_path(fixture), inbox / name)


def all_done(inbox: Path, files: dict[str, tuple[str, str]]) -> bool:
    return all(
        (inbox / f"{Path(name).stem}.txt").exists() and (inbox / f"{Path(name).stem}.json").exists()
        for name in files
    )


def state_rows(state_file: Path) -> list[tuple[str, str]]:
    db = sqlite3.connect(state_file)
    try:
        return [
            (str(path, "utf-8"), state)
            for path, state in db.execute("SELECT path, state FROM files")
        ]
    finally:
        db.close()


def check_invariants(
    inbox: Path,
    files: dict[str, tuple[str, str]],
    speechkit: LocalSpeechKit,
    seaweedfs: devstack.SeaweedFS,
    bucket: str,
    state_file: Path,
    allowed_extra_submissions: int,
) -> None:
    for name, (_, expected) in files.items():
        stem = Path(name).stem
        assert (inbox / f"{stem}.txt").read_text(encoding="utf-8") == expected, name
        assert not (inbox / f"{stem}.error.json").exists()
    assert leftovers(inbox) == []
    wait_for(lambda: seaweedfs.list_keys(bucket=bucket) == [], "the bucket to be emptied")
    stats = speechkit.stats()
    distinct = {fixture for fixture, _ in files.values()}
    by_content = stats["submissions_by_sha256"]
    assert len(by_content) == len(distinct)
    assert sum(by_content.values()) <= len(distinct) + allowed_extra_submissions
    assert all(count >= 1 for count in by_content.values())
    latest: dict[str, str] = {}
    for path, state in state_rows(state_file):
        latest[path] = state
    assert sorted(Path(path).name for path in latest) == sorted(files)
    assert set(latest.values()) == {"done"}


def kill_at(daemon: Daemon, point: str) -> None:
    """Start the daemon to be killed at `point`; wait until it is."""
    daemon.start(extra_env={crashpoints.ENVIRONMENT_VARIABLE: point})
    assert daemon.process is not None
    code = daemon.process.wait(timeout=60)
    assert code == -9, f"the daemon did not reach crash point {point}:\n{daemon.log()}"


def finish_and_check(
    daemon: Daemon,
    inbox: Path,
    stack: tuple[LocalSpeechKit, devstack.SeaweedFS, str, Path],
    extra: int,
) -> None:
    """Restart the killed daemon, let it finish everything, check the invariants, stop it."""
    with daemon.start():
        wait_for(lambda: all_done(inbox, FILES), "every transcript after the restart")
        # A .txt from before the crash may already be right while its outputs are written again.
        daemon.wait_for_count("done", len(FILES))
        check_invariants(inbox, FILES, *stack, allowed_extra_submissions=extra)
        assert daemon.stop() == 0


@pytest.mark.parametrize("point", V2_POINTS)
def test_kill_at_a_named_step_then_restart_finishes_everything(
    point: str,
    make_daemon: Callable[..., Daemon],
    inbox: Path,
    tmp_path: Path,
    speechkit: LocalSpeechKit,
    seaweedfs: devstack.SeaweedFS,
    bucket: str,
) -> None:
    daemon = make_daemon()
    drop(inbox, FILES)
    kill_at(daemon, point)
    stack = (speechkit, seaweedfs, bucket, tmp_path / "state" / "state.db")
    finish_and_check(daemon, inbox, stack, len(FILES) if point in GAP_POINTS else 0)
    if point not in GAP_POINTS:
        assert speechkit.stats()["submissions"] == len(FILES)


@pytest.mark.parametrize(
    ("storage", "points"),
    [(False, crashpoints.INLINE_POINTS), (True, STORAGE_V3_POINTS)],
    ids=["inline", "storage"],
)
def test_api_v3_killed_at_each_step_in_turn_finishes_everything(
    storage: bool,
    points: tuple[str, ...],
    make_daemon: Callable[..., Daemon],
    inbox: Path,
    tmp_path: Path,
    speechkit: LocalSpeechKit,
    seaweedfs: devstack.SeaweedFS,
    bucket: str,
) -> None:
    """The v3 twin of every crash point, one restart each: the files go on from wherever the
    last kill left them, so one run passes every point (the inline run every point but the
    upload's, which it has not). One file at a time, so that a kill meant for one file's step
    never also catches the other between its submission and the commit of its id."""
    v3 = {"speechkit": {"api": "v3", "stt_v3_url": speechkit.stt_v3_url}, "concurrency": 1}
    daemon = make_daemon(**v3, **({} if storage else {"storage": None}))
    drop(inbox, FILES)
    for point in points:
        kill_at(daemon, point)
    stack = (speechkit, seaweedfs, bucket, tmp_path / "state" / "state.db")
    finish_and_check(daemon, inbox, stack, 1)  # 1: the after_submit kill, the documented gap
    stats = speechkit.stats()
    assert stats["v3"]["submissions"] == stats["submissions"]
    assert stats["v3"]["inline"] == (0 if storage else stats["submissions"])
    # Results are deleted from the service once saved, except the one whose daemon was killed
    # just before (it expires there after 3 days).
    assert stats["v3"]["deleted"] >= len(FILES) - 1


def test_random_kills_during_a_batch_lose_nothing(
    make_daemon: Callable[..., Daemon],
    inbox: Path,
    tmp_path: Path,
    speechkit: LocalSpeechKit,
    seaweedfs: devstack.SeaweedFS,
    bucket: str,
) -> None:
    rng = random.Random(20261125)
    files = {
        "a.ogg": ("mono.ogg", MONO_TXT),
        "b.ogg": ("stereo.ogg", STEREO_TXT),
        "c.opus": ("unicode.ogg", UNICODE_TXT),
        "same as a.ogg": ("mono.ogg", MONO_TXT),  # duplicate content
    }
    speechkit.set_config(seconds_per_minute=3.0)  # operations stay pending for a while
    daemon = make_daemon()
    kills = 0
    daemon.start()
    drop(inbox, files)
    for _ in range(5):
        time.sleep(rng.uniform(0.1, 1.2))
        daemon.kill()
        kills += 1
        if all_done(inbox, files):
            break
        daemon.start()
    with daemon.start() if daemon.process_exited() else daemon:
        wait_for(lambda: all_done(inbox, files), "every transcript after the kills")
        daemon.wait_for_count("done", len(files))
        check_invariants(
            inbox, files, speechkit, seaweedfs, bucket, tmp_path / "state" / "state.db",
            allowed_extra_submissions=kills * len(files),
        )  # fmt: skip
        assert daemon.stop() == 0


def test_restart_resumes_pending_operations_without_new_submissions(
    make_daemon: Callable[..., Daemon],
    inbox: Path,
    speechkit: LocalSpeechKit,
) -> None:
    speechkit.set_config(seconds_per_minute=30.0)  # the mono clip takes ~2 s on the server
    daemon = make_daemon()
    with daemon.start():
        drop(inbox, {"slow.ogg": ("mono.ogg", MONO_TXT)})
        daemon.wait_for_count("pending", 1)
        assert daemon.stop() == 0
    uploads_before = speechkit.stats()["submissions"]
    with daemon.start():
        wait_for(lambda: all_done(inbox, {"slow.ogg": ("", "")}), "the transcript after restart")
        assert (inbox / "slow.txt").read_text() == MONO_TXT
        assert daemon.stop() == 0
    assert speechkit.stats()["submissions"] == uploads_before == 1
    assert "uploaded" not in daemon.log().split("started:")[-1]


def test_files_dropped_while_down_are_found_and_unchanged_ones_are_not_redone(
    make_daemon: Callable[..., Daemon], inbox: Path, speechkit: LocalSpeechKit
) -> None:
    daemon = make_daemon()
    with daemon.start():
        drop(inbox, {"first.ogg": ("mono.ogg", MONO_TXT)})
        wait_for(lambda: all_done(inbox, {"first.ogg": ("", "")}), "first.txt")
        assert daemon.stop() == 0
    drop(inbox, {"while-down.ogg": ("stereo.ogg", STEREO_TXT)})
    with daemon.start():
        wait_for(lambda: all_done(inbox, {"while-down.ogg": ("", "")}), "while-down.txt")
        assert daemon.stop() == 0
    assert speechkit.stats()["submissions"] == 2
    second_run = daemon.log().split("started:")[-1]
    assert "first.ogg" not in second_run  # recognised by path, size and mtime, not read again
