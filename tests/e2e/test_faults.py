"""Faults, quotas, bad input, awkward names: good files all finish, bad ones are refused clearly."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from speechkit_local import LocalSpeechKit, ServerSettings, devstack
from tests.e2e.harness import Daemon, leftovers, wait_for
from tests.e2e.test_pipeline import MONO_TXT, STEREO_TXT, UNICODE_TXT, done_outputs
from tests.fixtures_audio import (
    break_page_chain,
    fixture_path,
    read_fixture,
    set_last_granule,
    truncate,
)

PRE_SKIP = 312  # every fixture's pre-skip (tests/data/README.md)


def granule_for(seconds: float) -> int:
    return int(seconds * 48_000) + PRE_SKIP


BAD_FILES: dict[str, tuple[bytes, str, str]] = {
    # name: (content, expected code, a word the reason must contain)
    "empty.ogg": (b"", "empty", "empty"),
    # Not Ogg Opus is no longer refused as such (it is converted); not media at all is.
    "random.ogg": (bytes(range(256)) * 8, "not_media", "not audio the decoder can read"),
    "notes.ogg": (read_fixture("formats/notes.wav"), "not_media", "decoder can read"),
    "screen.ogg": (read_fixture("formats/video_no_audio.mp4"), "no_audio", "no audio stream"),
    "half-copied.ogg": (truncate(read_fixture("mono.ogg"), 700), "truncated", "truncated"),
    "broken-middle.ogg": (break_page_chain(read_fixture("mono.ogg"), 3), "corrupt", "corrupt"),
    "five-hours.ogg": (
        set_last_granule(read_fixture("mono.ogg"), granule_for(5 * 3600)),
        "too_long",
        "4 h",
    ),
    "stereo-2h01.ogg": (
        set_last_granule(read_fixture("stereo.ogg"), granule_for(2 * 3600 + 60)),
        "too_long",
        "4 h",
    ),
}


def test_bad_files_are_refused_locally_with_clear_reasons_and_good_ones_finish(
    make_daemon: Callable[..., Daemon], inbox: Path, speechkit: LocalSpeechKit
) -> None:
    huge = inbox / "huge.ogg"
    with make_daemon().start() as daemon:
        for name, (content, _, _) in BAD_FILES.items():
            (inbox / name).write_bytes(content)
        with huge.open("wb") as stream:  # sparse: 1 GiB + 1 byte after a valid head
            stream.write(read_fixture("mono.ogg")[:4096])
            stream.truncate(1024**3 + 1)
        shutil.copy(fixture_path("mono.ogg"), inbox / "good.ogg")
        assert done_outputs(inbox, "good")[0] == MONO_TXT
        for name in [*BAD_FILES, "huge.ogg"]:
            stem = name.removesuffix(".ogg")
            wait_for((inbox / f"{stem}.error.json").exists, f"{stem}.error.json")
        for name, (_, code, word) in BAD_FILES.items():
            error = json.loads((inbox / f"{name.removesuffix('.ogg')}.error.json").read_text())
            assert (error["stage"], error["code"]) == ("check", code), name
            assert word in error["message"], (name, error["message"])
            assert error["file"] == str(inbox / name)
        huge_error = json.loads((inbox / "huge.error.json").read_text())
        assert huge_error["code"] == "too_large"
        assert speechkit.stats()["submissions"] == 1  # only the good file
        assert daemon.status()["counts"]["failed"] == len(BAD_FILES) + 1
        assert daemon.process is not None
        assert daemon.process.poll() is None
        assert daemon.stop() == 0


def test_api_faults_are_retried_and_never_fail_a_file(
    make_daemon: Callable[..., Daemon], inbox: Path, speechkit: LocalSpeechKit
) -> None:
    speechkit.set_faults(
        error_rate=0.2, error_status=503, rate_limit_rate=0.2, retry_after_seconds=1,
        drop_rate=0.15, drop_after_create=True, slow_rate=0.1, slow_seconds=0.5,
    )  # fmt: skip
    # The server's fault draws are seeded (tests/conftest.py), so the same faults come every run.
    files = {"a.ogg": ("mono.ogg", MONO_TXT), "b.ogg": ("stereo.ogg", STEREO_TXT),
             "c.ogg": ("unicode.ogg", UNICODE_TXT), "d.ogg": ("silence.ogg", "")}  # fmt: skip
    with make_daemon().start() as daemon:
        for name, (fixture, _) in files.items():
            shutil.copy(fixture_path(fixture), inbox / name)
        for name, (_, expected) in files.items():
            assert done_outputs(inbox, name.removesuffix(".ogg"))[0] == expected
        stats = speechkit.stats()
        injected = stats["faults_injected"]
        assert sum(injected["submit"].values()) + sum(injected["operation"].values()) > 0
        lost_answers = injected["submit"]["drop_after_create"]  # operations created, answer lost
        assert len(files) <= stats["submissions"] <= len(files) + lost_answers
        assert daemon.status()["counts"]["failed"] == 0
        assert list(inbox.glob("*.error.json")) == []
        assert daemon.stop() == 0
    log = daemon.log()
    assert "retrying in" in log


def test_refused_api_key_pauses_with_one_loud_line_then_resumes_by_itself(
    make_daemon: Callable[..., Daemon], inbox: Path, speechkit: LocalSpeechKit
) -> None:
    speechkit.set_faults(auth_fail=True)
    with make_daemon(auth_retry_seconds=1).start() as daemon:
        for index in range(3):
            shutil.copy(fixture_path("mono.ogg"), inbox / f"call{index}.ogg")
            os.utime(inbox / f"call{index}.ogg", (index, index))  # distinct versions, same bytes
        wait_for(lambda: "refused our credentials" in daemon.log(), "the credential log line")
        time.sleep(2.5)
        requests_while_paused = speechkit.stats()["submit_requests"]
        assert requests_while_paused <= 5  # about one probe per second, not one per file per try
        assert daemon.status()["counts"]["failed"] == 0
        speechkit.set_faults(auth_fail=False)
        for index in range(3):
            assert done_outputs(inbox, f"call{index}")[0] == MONO_TXT
        assert daemon.stop() == 0
    log = daemon.log()
    assert log.count("refused our credentials") == 1
    assert "speechkit.api_key" in log
    assert "accepts our credentials again" in log


def test_a_request_the_service_refuses_fails_that_file_with_its_message(
    make_daemon: Callable[..., Daemon], inbox: Path, speechkit: LocalSpeechKit
) -> None:
    # The config's own validation refuses what it knows the service refuses, so the service
    # is told to refuse the next submissions (400 with code 3) for a reason no client foresees.
    speechkit.set_faults(error_rate=1.0, error_status=400, error_endpoints="submit")
    daemon = make_daemon()
    with daemon.start():
        shutil.copy(fixture_path("mono.ogg"), inbox / "refused.ogg")
        wait_for((inbox / "refused.error.json").exists, "refused.error.json")
        error = json.loads((inbox / "refused.error.json").read_text())
        assert error["stage"] == "submit"
        assert error["code"] == 3
        assert "the service refused the request" in error["message"]
        speechkit.set_faults(error_rate=0.0)
        shutil.copy(fixture_path("stereo.ogg"), inbox / "fine.ogg")
        assert done_outputs(inbox, "fine")[0] == STEREO_TXT
        assert daemon.stop() == 0


def test_retry_requeues_failed_files_and_a_replaced_file_retries_itself(
    make_daemon: Callable[..., Daemon], inbox: Path, speechkit: LocalSpeechKit
) -> None:
    speechkit.set_faults(operation_error_rate=1.0)
    with make_daemon().start() as daemon:
        shutil.copy(fixture_path("mono.ogg"), inbox / "flaky.ogg")
        shutil.copy(fixture_path("stereo.ogg"), inbox / "replaced.ogg")
        for stem in ("flaky", "replaced"):
            wait_for((inbox / f"{stem}.error.json").exists, f"{stem}.error.json")
        speechkit.set_faults(operation_error_rate=0.0)
        result = daemon.cli("retry", str(inbox / "flaky.ogg"))
        assert "re-queued 1 file(s)" in result.stdout
        assert done_outputs(inbox, "flaky")[0] == MONO_TXT
        # The outputs come first (.json last), then the stale error file goes: wait for it.
        wait_for(lambda: not (inbox / "flaky.error.json").exists(), "the old error file to go")
        temp = inbox / ".replaced.ogg.tmp"
        shutil.copy(fixture_path("unicode.ogg"), temp)
        os.replace(temp, inbox / "replaced.ogg")
        assert done_outputs(inbox, "replaced")[0] == UNICODE_TXT
        wait_for(lambda: not (inbox / "replaced.error.json").exists(), "the stale error file to go")
        status = daemon.status()
        assert status["counts"]["failed"] == 0  # the failed old version was superseded
        assert status["counts"]["superseded"] == 1
        assert "re-queued 0 file(s)" in daemon.cli("retry", "--failed").stdout
        assert daemon.stop() == 0


AWKWARD_NAMES = [
    "Запись звонка №5.ogg",
    'it\'s "quoted" & (odd).ogg',
    "-starts-with-dash.ogg",
    "new\nline.ogg",
    "UPPER.OPUS",
    "x" * 236 + ".ogg",  # 240 bytes
    "ё" * 118 + ".ogg",  # 240 bytes of two-byte characters
]


def test_awkward_names_all_get_their_transcripts(
    make_daemon: Callable[..., Daemon], inbox: Path
) -> None:
    with make_daemon().start() as daemon:
        for name in AWKWARD_NAMES:
            shutil.copy(fixture_path("mono.ogg"), inbox / name)
        for name in AWKWARD_NAMES:
            stem = name.rsplit(".", 1)[0]
            assert done_outputs(inbox, stem)[0] == MONO_TXT, name
        assert leftovers(inbox) == []
        assert daemon.stop() == 0
    assert "Traceback" not in daemon.log()


def test_symlinks_are_followed_only_inside_the_folder_and_vanished_files_dropped(
    make_daemon: Callable[..., Daemon], inbox: Path, tmp_path: Path, speechkit: LocalSpeechKit
) -> None:
    outside = tmp_path / "outside.ogg"
    shutil.copy(fixture_path("stereo.ogg"), outside)
    store = inbox / "store"
    store.mkdir()
    shutil.copy(fixture_path("mono.ogg"), store / "kept.ogg")
    with make_daemon(watch=[{"path": str(inbox), "recursive": True}]).start() as daemon:
        (inbox / "link-out.ogg").symlink_to(outside)
        (inbox / "link-in.ogg").symlink_to(store / "kept.ogg")
        gone = inbox / "gone.ogg"
        shutil.copy(fixture_path("unicode.ogg"), gone)
        gone.unlink()
        assert done_outputs(inbox, "link-in")[0] == MONO_TXT
        assert done_outputs(store, "kept")[0] == MONO_TXT
        time.sleep(1.0)
        assert not (inbox / "link-out.txt").exists()
        assert not (inbox / "gone.txt").exists()
        assert not (inbox / "gone.error.json").exists()
        assert speechkit.stats()["submissions"] == 1  # same bytes: one recognition
        assert daemon.stop() == 0


def test_unwritable_output_folder_keeps_the_file_pending_until_it_can_write(
    make_daemon: Callable[..., Daemon], inbox: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    with make_daemon(watch=[{"path": str(inbox), "output_dir": str(out)}]).start() as daemon:
        shutil.rmtree(out)
        out.write_text("a file where the output folder should be")  # writes must fail
        shutil.copy(fixture_path("mono.ogg"), inbox / "blocked.ogg")
        wait_for(lambda: "cannot write the transcript" in daemon.log(), "the write failure")
        status = daemon.status()
        assert status["counts"]["done"] == 0
        assert status["counts"]["pending"] == 1
        out.unlink()
        out.mkdir()
        assert done_outputs(out, "blocked")[0] == MONO_TXT
        daemon.wait_for_count("done", 1)
        assert daemon.stop() == 0


def test_quota_paces_submissions_and_status_reports_the_backlog(
    make_daemon: Callable[..., Daemon], inbox: Path, speechkit: LocalSpeechKit
) -> None:
    with make_daemon(quota={"submissions_per_hour": 2}).start() as daemon:
        for index, fixture in enumerate(["mono.ogg", "stereo.ogg", "unicode.ogg", "silence.ogg"]):
            shutil.copy(fixture_path(fixture), inbox / f"q{index}.ogg")
        wait_for(lambda: len(list(inbox.glob("q*.json"))) == 2, "two transcripts")
        wait_for(lambda: "hourly quota of 2 submit calls reached" in daemon.log(), "pacing")
        time.sleep(1.0)
        assert len(list(inbox.glob("q*.json"))) == 2
        assert speechkit.stats()["submissions"] == 2
        status = daemon.status()
        assert status["quota"]["submissions_last_hour"] == 2
        assert status["quota"]["waiting_for_submission"] == 2
        assert status["quota"]["backlog_seconds"] > 0
        text = daemon.cli("status").stdout
        assert "backlog: 2 file(s) wait for submission" in text
        assert daemon.stop() == 0
    with daemon.start():  # the quota history survives a restart
        time.sleep(1.5)
        assert speechkit.stats()["submissions"] == 2
        assert daemon.stop() == 0


def test_storage_outage_is_waited_out(tmp_path: Path, inbox: Path, api_key: str) -> None:
    with devstack.SeaweedFS(tmp_path / "own-weed") as storage:
        settings = ServerSettings(
            api_keys=(api_key,), seconds_per_minute=0.5, storage_endpoint=storage.endpoint_url,
            storage_access_key_id=storage.access_key_id,
            storage_secret_access_key=storage.secret_access_key,
        )  # fmt: skip
        with LocalSpeechKit(settings) as speechkit:
            config = devstack.write_daemon_config(
                tmp_path / "config.yaml", watch_dirs=[inbox], storage=storage,
                speechkit_url=speechkit.url, api_key=api_key, state_file=tmp_path / "state.db",
            )  # fmt: skip
            daemon = Daemon(config, devstack.daemon_env(storage, api_key), tmp_path / "log")
            with daemon.start():
                storage.stop()
                shutil.copy(fixture_path("mono.ogg"), inbox / "during-outage.ogg")
                wait_for(lambda: "storage unreachable" in daemon.log(), "the outage to be seen")
                assert daemon.status()["counts"]["failed"] == 0
                storage.restart()
                assert done_outputs(inbox, "during-outage")[0] == MONO_TXT
                wait_for(lambda: storage.list_keys() == [], "the object to be deleted")
                assert daemon.stop() == 0


def test_a_second_signal_exits_at_once(make_daemon: Callable[..., Daemon], inbox: Path) -> None:
    daemon = make_daemon()
    with daemon.start():
        assert daemon.process is not None
        daemon.send(15)
        daemon.send(15)
        code = daemon.process.wait(timeout=10)
        assert code in (0, 1)
    # Whatever was in flight resumes cleanly.
    with daemon.start():
        shutil.copy(fixture_path("mono.ogg"), inbox / "after.ogg")
        assert done_outputs(inbox, "after")[0] == MONO_TXT
        assert daemon.stop() == 0


def test_cli_retry_on_an_unknown_path_says_so(
    make_daemon: Callable[..., Daemon], inbox: Path
) -> None:
    daemon = make_daemon()
    with daemon.start():
        result = daemon.cli("retry", str(inbox / "never-seen.ogg"), check=False)
        assert result.returncode == 1
        assert "is not known to the daemon" in result.stderr
        assert daemon.stop() == 0


def test_sigterm_during_a_slow_submit_waits_for_it_and_pays_once(
    make_daemon: Callable[..., Daemon], inbox: Path, speechkit: LocalSpeechKit
) -> None:
    speechkit.set_faults(slow_rate=1.0, slow_seconds=3.0, slow_endpoints=["submit"])
    daemon = make_daemon()
    with daemon.start():
        shutil.copy(fixture_path("mono.ogg"), inbox / "inflight.ogg")
        wait_for(lambda: speechkit.stats()["submit_requests"] == 1, "the submission to be sent")
        started = time.monotonic()
        assert daemon.stop() == 0
        assert time.monotonic() - started < 10
    assert "waiting for 1 step(s) in flight" in daemon.log()
    speechkit.set_faults(slow_rate=0.0)
    with daemon.start():
        assert done_outputs(inbox, "inflight")[0] == MONO_TXT
        assert daemon.stop() == 0
    assert speechkit.stats()["submissions"] == 1  # the drained submit was recorded, not repeated


def test_an_unresolvable_api_host_is_retried_not_failed(
    make_daemon: Callable[..., Daemon], inbox: Path
) -> None:
    daemon = make_daemon(
        speechkit={"recognize_url": "http://speechkit.invalid/speech/stt/v2/longRunningRecognize"}
    )
    with daemon.start():
        shutil.copy(fixture_path("mono.ogg"), inbox / "offline.ogg")
        wait_for(lambda: "name resolution failed" in daemon.log(), "the DNS failure in the log")
        status = daemon.status()
        assert status["counts"]["failed"] == 0
        assert status["in_progress"][0]["state"] == "submitting"
        assert "may be billed twice" not in daemon.log()  # never sent: no ambiguity
        assert daemon.stop() == 0
