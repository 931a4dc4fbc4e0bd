"""Deduplication, forgotten operations, changed files and orphaned objects."""

from __future__ import annotations

import os
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

from speechkit_local import LocalSpeechKit, devstack
from tests.e2e.harness import Daemon, wait_for
from tests.e2e.test_pipeline import MONO_TXT, STEREO_TXT, done_outputs
from tests.fixtures_audio import fixture_path


def test_same_bytes_under_another_name_reuse_the_earlier_result(
    make_daemon: Callable[..., Daemon], inbox: Path, speechkit: LocalSpeechKit
) -> None:
    with make_daemon().start() as daemon:
        shutil.copy(fixture_path("mono.ogg"), inbox / "original.ogg")
        first_text, first_json = done_outputs(inbox, "original")
        shutil.copy(fixture_path("mono.ogg"), inbox / "copy of original.ogg")
        text, operation = done_outputs(inbox, "copy of original")
        assert text == first_text == MONO_TXT
        assert operation == first_json
        assert speechkit.stats()["submissions"] == 1
        log = daemon.log()
        assert log.count("uploaded ") == 1
        assert "reusing its result" in log
        assert daemon.stop() == 0


def test_same_bytes_in_two_folders_at_once_are_submitted_once(
    make_daemon: Callable[..., Daemon], inbox: Path, tmp_path: Path, speechkit: LocalSpeechKit
) -> None:
    other = tmp_path / "other"
    other.mkdir()
    with make_daemon(watch_dirs=[inbox, other]).start() as daemon:
        shutil.copy(fixture_path("stereo.ogg"), inbox / "call.ogg")
        shutil.copy(fixture_path("stereo.ogg"), other / "call.ogg")
        assert done_outputs(inbox, "call")[0] == STEREO_TXT
        assert done_outputs(other, "call")[0] == STEREO_TXT
        assert speechkit.stats()["submissions"] == 1
        assert daemon.stop() == 0


def test_a_rewritten_file_is_transcribed_again_and_outputs_replaced(
    make_daemon: Callable[..., Daemon], inbox: Path, speechkit: LocalSpeechKit
) -> None:
    with make_daemon().start() as daemon:
        target = inbox / "memo.ogg"
        shutil.copy(fixture_path("mono.ogg"), target)
        assert done_outputs(inbox, "memo")[0] == MONO_TXT
        first_id = done_outputs(inbox, "memo")[1]["id"]
        temp = inbox / "memo.ogg.part"
        shutil.copy(fixture_path("stereo.ogg"), temp)
        os.replace(temp, target)
        # NAME.json is written last: once it holds the new operation, the .txt is new too.
        wait_for(
            lambda: done_outputs(inbox, "memo")[1]["id"] != first_id,
            "the result of the new content",
        )
        assert (inbox / "memo.txt").read_text(encoding="utf-8") == STEREO_TXT
        assert speechkit.stats()["submissions"] == 2
        daemon.wait_for_count("done", 2)
        assert daemon.stop() == 0


def test_an_operation_the_service_forgot_is_submitted_again(
    make_daemon: Callable[..., Daemon], inbox: Path, speechkit: LocalSpeechKit
) -> None:
    speechkit.set_config(seconds_per_minute=60.0)  # the 4 s clip takes ~4 s on the server
    with make_daemon().start() as daemon:
        shutil.copy(fixture_path("mono.ogg"), inbox / "old.ogg")
        pending = wait_for(
            lambda: [item for item in daemon.status()["in_progress"] if item["operation_id"]],
            "an operation id",
        )
        assert speechkit.expire_operation(pending[0]["operation_id"])
        speechkit.set_config(seconds_per_minute=0.5)
        text, operation = done_outputs(inbox, "old")
        assert text == MONO_TXT
        assert operation["id"] != pending[0]["operation_id"]
        assert speechkit.stats()["submissions"] == 2
        assert "unknown to the service" in daemon.log()
        assert daemon.stop() == 0


def test_a_pending_operation_past_retention_is_resubmitted_without_waiting_for_404(
    make_daemon: Callable[..., Daemon], inbox: Path, tmp_path: Path, speechkit: LocalSpeechKit
) -> None:
    speechkit.set_config(seconds_per_minute=600.0)  # stays pending while we stop the daemon
    daemon = make_daemon()
    with daemon.start():
        shutil.copy(fixture_path("mono.ogg"), inbox / "weekend.ogg")
        daemon.wait_for_count("pending", 1)
        assert daemon.stop() == 0
    db = sqlite3.connect(tmp_path / "state" / "state.db")
    db.execute("UPDATE files SET submitted_at = submitted_at - 4 * 86400")  # a long weekend
    db.commit()
    db.close()
    speechkit.set_config(seconds_per_minute=0.5)
    with daemon.start():
        assert done_outputs(inbox, "weekend")[0] == MONO_TXT
        assert daemon.stop() == 0
    assert "older than the service keeps results" in daemon.log()
    assert "unknown to the service" not in daemon.log()  # it did not wait for a 404
    assert speechkit.stats()["submissions"] == 2


def test_orphaned_objects_are_deleted_at_start_and_foreign_ones_left(
    make_daemon: Callable[..., Daemon], seaweedfs: devstack.SeaweedFS, bucket: str
) -> None:
    client = seaweedfs.client()
    orphan = "speechkit-watch/" + "ab" * 32 + ".ogg"
    foreign = "speechkit-watch/notes/readme.txt"
    client.put_object(Bucket=bucket, Key=orphan, Body=b"OggS")
    client.put_object(Bucket=bucket, Key=foreign, Body=b"keep me")
    with make_daemon().start() as daemon:
        wait_for(lambda: seaweedfs.list_keys(bucket=bucket) == [foreign], "the orphan to go")
        wait_for(lambda: "deleted 1 orphaned object" in daemon.log(), "the sweep's log line")
        assert daemon.stop() == 0
    client.delete_object(Bucket=bucket, Key=foreign)


def test_temp_files_left_by_a_crash_are_removed_at_start(
    make_daemon: Callable[..., Daemon], inbox: Path
) -> None:
    leftover = inbox / ".call.txt.1a2b3c4d.skw-tmp"
    leftover.write_text("half a transcript")
    with make_daemon().start() as daemon:
        wait_for(lambda: not leftover.exists(), "the leftover temp file to go")
        assert daemon.stop() == 0


def test_a_corrupt_state_file_stops_the_start_with_a_clear_error(
    make_daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    state_file = tmp_path / "state" / "state.db"
    state_file.parent.mkdir(parents=True)
    state_file.write_bytes(b"SQLite format 3\x00" + b"\xff" * 4000)
    daemon = make_daemon()
    result = daemon.cli("run", check=False)
    assert result.returncode == 2
    assert str(state_file) in result.stderr
    assert state_file.read_bytes().startswith(b"SQLite format 3\x00\xff")  # not silently reset
