"""The core pipeline as a user sees it: drop an Ogg Opus file, get NAME.txt and NAME.json."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from daemon import crashpoints
from speechkit_local import LocalSpeechKit, devstack
from tests.e2e.harness import Daemon, leftovers, wait_for
from tests.fixtures_audio import fixture_path

MONO_TXT = "hello from the watch folder\nthis is a test recording\n"
MONO_LITERATURE_TXT = "Hello from the watch folder.\nThis is a test recording.\n"
STEREO_TXT = (
    "[channel 1] the left channel says good morning\n"
    "[channel 2] the right channel answers good evening\n"
)
UNICODE_TXT = "привет это проверка\n"


def done_outputs(folder: Path, name: str) -> tuple[str, dict[str, object]]:
    txt, result = folder / f"{name}.txt", folder / f"{name}.json"
    wait_for(lambda: txt.exists() and result.exists(), f"{name}.txt and {name}.json")
    return txt.read_text(encoding="utf-8"), json.loads(result.read_text(encoding="utf-8"))


def assert_clean(folder: Path, seaweedfs: devstack.SeaweedFS, bucket: str) -> None:
    assert leftovers(folder) == []
    wait_for(lambda: seaweedfs.list_keys(bucket=bucket) == [], "the bucket to be emptied")


def test_copied_file_gets_exact_transcript_and_the_raw_operation(
    make_daemon: Callable[..., Daemon],
    inbox: Path,
    speechkit: LocalSpeechKit,
    seaweedfs: devstack.SeaweedFS,
    bucket: str,
) -> None:
    with make_daemon().start() as daemon:
        shutil.copy(fixture_path("mono.ogg"), inbox / "call.ogg")
        text, operation = done_outputs(inbox, "call")
        assert text == MONO_TXT
        assert operation["done"] is True
        assert str(operation["id"]).startswith("e03")
        response = operation["response"]
        assert isinstance(response, dict)
        assert response["@type"].endswith("LongRunningRecognitionResponse")
        assert [chunk["channelTag"] for chunk in response["chunks"]] == ["1", "1"]
        assert_clean(inbox, seaweedfs, bucket)
        assert speechkit.stats()["submissions"] == 1
        status = daemon.status()
        assert status["counts"]["done"] == 1
        assert daemon.stop() == 0
    assert "Traceback" not in daemon.log()


def test_renamed_in_from_a_temp_name_and_present_before_start(
    make_daemon: Callable[..., Daemon], inbox: Path, speechkit: LocalSpeechKit
) -> None:
    shutil.copy(fixture_path("mono.ogg"), inbox / "early.ogg")
    with make_daemon().start() as daemon:
        temp = inbox / "late.ogg.part"
        shutil.copy(fixture_path("stereo.ogg"), temp)
        time.sleep(1.0)  # longer than settle: a .part file must never be taken
        os.rename(temp, inbox / "late.ogg")
        assert done_outputs(inbox, "early")[0] == MONO_TXT
        assert done_outputs(inbox, "late")[0] == STEREO_TXT
        assert not (inbox / "late.ogg.txt").exists()
        assert speechkit.stats()["submissions"] == 2
        assert daemon.stop() == 0


def test_slow_writer_is_not_taken_half_written(
    make_daemon: Callable[..., Daemon], inbox: Path, speechkit: LocalSpeechKit
) -> None:
    data = fixture_path("mono.ogg").read_bytes()
    with make_daemon().start() as daemon:
        with (inbox / "slow.ogg").open("wb") as stream:
            for start in range(0, len(data), 2048):
                stream.write(data[start : start + 2048])
                stream.flush()
                time.sleep(0.7)  # each pause is longer than settle_seconds (0.5)
        text, _ = done_outputs(inbox, "slow")
        assert text == MONO_TXT
        assert not (inbox / "slow.error.json").exists()
        assert speechkit.stats()["submissions"] == 1
        assert daemon.stop() == 0


def test_stereo_and_unicode_names_with_spaces(
    make_daemon: Callable[..., Daemon], inbox: Path
) -> None:
    with make_daemon().start() as daemon:
        shutil.copy(fixture_path("stereo.ogg"), inbox / "Звонок клиента 1.OGG")
        shutil.copy(fixture_path("unicode.ogg"), inbox / "заметка 'два'.opus")
        assert done_outputs(inbox, "Звонок клиента 1")[0] == STEREO_TXT
        assert done_outputs(inbox, "заметка 'два'")[0] == UNICODE_TXT
        assert daemon.stop() == 0


def test_silence_gives_an_empty_transcript(make_daemon: Callable[..., Daemon], inbox: Path) -> None:
    with make_daemon().start() as daemon:
        shutil.copy(fixture_path("silence.ogg"), inbox / "quiet.ogg")
        text, operation = done_outputs(inbox, "quiet")
        assert text == ""
        assert operation["done"] is True
        assert "chunks" not in operation["response"]  # type: ignore[operator]
        assert daemon.stop() == 0


def test_a_file_that_is_not_audio_is_refused_locally_and_never_uploaded(
    make_daemon: Callable[..., Daemon], inbox: Path, speechkit: LocalSpeechKit
) -> None:
    with make_daemon().start() as daemon:
        shutil.copy(fixture_path("formats/notes.wav"), inbox / "music.ogg")
        error_file = inbox / "music.error.json"
        wait_for(error_file.exists, "music.error.json")
        error = json.loads(error_file.read_text())
        assert error["file"] == str(inbox / "music.ogg")
        assert error["stage"] == "check"
        assert "not audio the decoder can read" in error["message"]
        assert set(error) >= {"file", "stage", "message", "at"}
        assert speechkit.stats()["submissions"] == 0
        assert not (inbox / "music.txt").exists()
        status = daemon.status()
        assert status["counts"]["failed"] == 1
        assert status["failed"][0]["path"] == str(inbox / "music.ogg")
        assert "not audio the decoder can read" in status["failed"][0]["reason"]
        assert daemon.stop() == 0


def test_operation_error_gives_error_file_with_the_service_message(
    make_daemon: Callable[..., Daemon], inbox: Path, speechkit: LocalSpeechKit
) -> None:
    speechkit.set_faults(operation_error_rate=1.0)
    with make_daemon().start() as daemon:
        shutil.copy(fixture_path("mono.ogg"), inbox / "broken.ogg")
        error_file = inbox / "broken.error.json"
        wait_for(error_file.exists, "broken.error.json")
        error = json.loads(error_file.read_text())
        assert error["stage"] == "recognition"
        assert "Invalid audio received" in error["message"]
        assert error["code"] == 3
        assert not (inbox / "broken.txt").exists()
        assert daemon.stop() == 0


@pytest.mark.parametrize("link", ["presigned", "plain"])
def test_both_link_kinds_and_per_folder_recognition(
    make_daemon: Callable[..., Daemon], inbox: Path, tmp_path: Path, link: str
) -> None:
    second = tmp_path / "literature"
    second.mkdir()
    daemon = make_daemon(
        watch_dirs=[inbox, second],
        storage={"link": link},
        watch=[
            {"path": str(inbox)},
            {"path": str(second), "recognition": {"literature_text": True}},
        ],
    )
    with daemon.start():
        shutil.copy(fixture_path("mono.ogg"), inbox / "plain.ogg")
        shutil.copy(fixture_path("mono.ogg"), second / "pretty.ogg")
        assert done_outputs(inbox, "plain")[0] == MONO_TXT
        assert done_outputs(second, "pretty")[0] == MONO_LITERATURE_TXT
        assert daemon.stop() == 0


def test_output_dir_and_recursive_watch(
    make_daemon: Callable[..., Daemon], inbox: Path, tmp_path: Path
) -> None:
    outputs = inbox / "transcripts"  # inside the watched folder: must not loop
    daemon = make_daemon(
        watch=[{"path": str(inbox), "recursive": True, "output_dir": str(outputs)}]
    )
    with daemon.start():
        (inbox / "team" / "monday").mkdir(parents=True)
        shutil.copy(fixture_path("mono.ogg"), inbox / "team" / "monday" / "standup.ogg")
        assert done_outputs(outputs / "team" / "monday", "standup")[0] == MONO_TXT
        assert not (inbox / "team" / "monday" / "standup.txt").exists()
        assert daemon.stop() == 0


def test_sigterm_stops_promptly_with_exit_0_and_sigint_too(
    make_daemon: Callable[..., Daemon], inbox: Path
) -> None:
    daemon = make_daemon()
    with daemon.start():
        started = time.monotonic()
        assert daemon.stop(signal.SIGTERM) == 0
        assert time.monotonic() - started < 5
    with daemon.start():
        assert daemon.stop(signal.SIGINT) == 0
    assert "stopped" in daemon.log()


def test_a_file_finishing_while_the_daemon_stops_has_its_object_deleted_before_exit(
    make_daemon: Callable[..., Daemon], inbox: Path, seaweedfs: devstack.SeaweedFS, bucket: str
) -> None:
    """SIGTERM while a finished file's step is still in flight (held just before its object is
    queued for deletion): the drain lets it end, and the object goes before the daemon exits,
    not at the next start (the bucket is billed meanwhile)."""
    daemon = make_daemon()
    with daemon.start(extra_env={crashpoints.PAUSE_VARIABLE: "before_delete:2"}):
        (inbox / "call.ogg").write_bytes(fixture_path("mono.ogg").read_bytes())
        done_outputs(inbox, "call")  # written; the step now waits at before_delete
        assert seaweedfs.list_keys(bucket=bucket) != []
        assert daemon.stop(signal.SIGTERM) == 0
    assert seaweedfs.list_keys(bucket=bucket) == []


def test_bad_config_exits_2_naming_file_and_key(make_daemon: Callable[..., Daemon]) -> None:
    daemon = make_daemon(settle_seconds="soon")
    result = daemon.cli("run", check=False)
    assert result.returncode == 2
    assert f"{daemon.config}: at 'settle_seconds': expected a number, got a string" in result.stderr


def test_a_watch_path_that_is_not_a_folder_exits_2(
    make_daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    # A missing folder is waited for (a late mount: tests/e2e/test_watch_folders.py); a file
    # where a folder should be is a config error that no restart fixes.
    (tmp_path / "nowhere").write_text("a file, not a folder")
    daemon = make_daemon(watch_dirs=[tmp_path / "nowhere"])
    result = daemon.cli("run", check=False)
    assert result.returncode == 2
    assert f"{daemon.config}: at 'watch[0].path': {tmp_path / 'nowhere'} is not a folder" in (
        result.stderr
    )


def test_secrets_never_appear_in_logs_outputs_or_status(
    make_daemon: Callable[..., Daemon],
    inbox: Path,
    seaweedfs: devstack.SeaweedFS,
    api_key: str,
) -> None:
    with make_daemon(log_level="debug").start() as daemon:
        shutil.copy(fixture_path("mono.ogg"), inbox / "secret-test.ogg")
        shutil.copy(fixture_path("formats/notes.wav"), inbox / "bad.ogg")
        done_outputs(inbox, "secret-test")
        wait_for((inbox / "bad.error.json").exists, "bad.error.json")
        status_text = daemon.cli("status").stdout + daemon.cli("status", "--json").stdout
        assert daemon.stop() == 0
    everything = daemon.log() + status_text
    everything += "".join(p.read_text(errors="replace") for p in inbox.glob("*.json"))
    everything += "".join(p.read_text(errors="replace") for p in inbox.glob("*.txt"))
    for secret in (api_key, seaweedfs.secret_access_key):
        assert secret not in everything
    assert "X-Amz-Signature" not in everything
