"""Subtitles, hooks, render, transcribe and after_done, as users run them."""

from __future__ import annotations

import datetime
import json
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from speechkit_local import LocalSpeechKit
from tests.e2e.harness import Daemon, command, wait_for
from tests.e2e.test_pipeline import MONO_TXT, STEREO_TXT, UNICODE_TXT, done_outputs
from tests.fixtures_audio import fixture_path


def test_subtitles_are_written_for_mono_and_stereo(
    make_daemon: Callable[..., Daemon], inbox: Path
) -> None:
    with make_daemon(outputs=["txt", "json", "srt", "vtt"]).start() as daemon:
        shutil.copy(fixture_path("stereo.ogg"), inbox / "call.ogg")
        shutil.copy(fixture_path("mono.ogg"), inbox / "memo.ogg")
        done_outputs(inbox, "call")
        done_outputs(inbox, "memo")
        wait_for((inbox / "memo.vtt").exists, "memo.vtt")
        srt = (inbox / "call.srt").read_text(encoding="utf-8")
        assert srt.startswith("1\n00:00:00,000 --> ")
        assert "[channel 1] the left channel" in srt
        assert "[channel 2] the right channel" in srt
        vtt = (inbox / "memo.vtt").read_text(encoding="utf-8")
        assert vtt.startswith("WEBVTT\n\n00:00:")
        assert "hello from the watch folder" in vtt
        assert "[channel" not in vtt
        assert daemon.stop() == 0


HOOK = (
    "import json, os, sys, time\n"
    "audio = os.path.basename(os.environ['SPEECHKIT_WATCH_AUDIO'])\n"
    "if audio.startswith('failing'):\n"
    "    print('hook says hi'); sys.exit(3)\n"
    "if audio.startswith('slow'):\n"
    "    time.sleep(30)\n"
    "facts = {k: v for k, v in os.environ.items() if k.startswith(('SPEECHKIT_WATCH_', 'YC_'))}\n"
    "open(sys.argv[1], 'a').write(json.dumps(facts) + '\\n')\n"
)


def test_on_complete_gets_the_facts_and_a_failing_hook_changes_nothing(
    make_daemon: Callable[..., Daemon], inbox: Path, tmp_path: Path
) -> None:
    record = tmp_path / "hook.jsonl"
    hook = {"command": [sys.executable, "-c", HOOK, str(record)], "timeout_seconds": 2}
    with make_daemon(on_complete=hook).start() as daemon:
        shutil.copy(fixture_path("mono.ogg"), inbox / "good.ogg")
        shutil.copy(fixture_path("formats/notes.wav"), inbox / "bad.ogg")
        shutil.copy(fixture_path("stereo.ogg"), inbox / "failing hook.ogg")
        shutil.copy(fixture_path("unicode.ogg"), inbox / "slow hook.ogg")
        wait_for(lambda: record.exists() and len(record.read_text().splitlines()) == 2, "2 hooks")
        facts = {Path(item["SPEECHKIT_WATCH_AUDIO"]).name: item
                 for item in map(json.loads, record.read_text().splitlines())}  # fmt: skip
        assert facts["good.ogg"]["SPEECHKIT_WATCH_RESULT"] == "done"
        assert facts["good.ogg"]["SPEECHKIT_WATCH_TXT"] == str(inbox / "good.txt")
        assert facts["good.ogg"]["SPEECHKIT_WATCH_JSON"] == str(inbox / "good.json")
        assert facts["good.ogg"]["SPEECHKIT_WATCH_ERROR"] == ""
        assert facts["bad.ogg"]["SPEECHKIT_WATCH_RESULT"] == "failed"
        assert facts["bad.ogg"]["SPEECHKIT_WATCH_ERROR"] == str(inbox / "bad.error.json")
        assert not any(name.startswith("YC_") for item in facts.values() for name in item)
        # A failing and a hanging hook are logged and change nothing.
        assert done_outputs(inbox, "failing hook")[0] == STEREO_TXT
        assert done_outputs(inbox, "slow hook")[0] == UNICODE_TXT
        wait_for(lambda: "exited 3; output: hook says hi" in daemon.log(), "the failing hook")
        wait_for(lambda: "stopped after 2 s" in daemon.log(), "the hanging hook to be stopped")
        status = daemon.status()
        assert status["counts"]["done"] == 3
        assert status["counts"]["failed"] == 1  # bad.ogg only
        assert daemon.stop() == 0


def test_render_rewrites_outputs_from_saved_json_without_the_network(
    make_daemon: Callable[..., Daemon], inbox: Path, tmp_path: Path
) -> None:
    with make_daemon().start() as daemon:
        shutil.copy(fixture_path("stereo.ogg"), inbox / "call.ogg")
        done_outputs(inbox, "call")
        assert daemon.stop() == 0
    (inbox / "call.txt").unlink()
    offline = make_daemon(outputs=["txt", "srt", "vtt"])
    offline.env["YC_API_KEY"] = "not-used"  # render needs no credentials that work
    result = offline.cli("render", str(inbox / "call.json"))
    assert result.returncode == 0
    assert (inbox / "call.txt").read_text(encoding="utf-8") == STEREO_TXT
    assert (inbox / "call.srt").exists()
    assert (inbox / "call.vtt").read_text(encoding="utf-8").startswith("WEBVTT")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    result = offline.cli("render", str(broken), check=False)
    assert result.returncode == 1
    assert "broken.json" in result.stderr


def test_transcribe_prints_each_transcript_and_exits_by_the_outcome(
    make_daemon: Callable[..., Daemon], tmp_path: Path, speechkit: LocalSpeechKit
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for name, fixture in [
        ("one.ogg", "mono.ogg"),
        ("two.ogg", "unicode.ogg"),
        ("bad.ogg", "formats/notes.wav"),
        ("three.mp3", "formats/mono.mp3"),
    ]:
        shutil.copy(fixture_path(fixture), elsewhere / name)
    daemon = make_daemon()
    result = daemon.cli("transcribe", str(elsewhere / "one.ogg"), str(elsewhere / "two.ogg"))
    assert result.returncode == 0
    assert f"==> {elsewhere / 'one.ogg'} <==\n{MONO_TXT}" in result.stdout
    assert f"==> {elsewhere / 'two.ogg'} <==\n{UNICODE_TXT}" in result.stdout
    assert (elsewhere / "one.txt").read_text() == MONO_TXT
    assert (elsewhere / "two.json").exists()
    failed = daemon.cli(
        "transcribe", str(elsewhere / "bad.ogg"), str(elsewhere / "x.ogg"), check=False
    )
    assert failed.returncode == 1
    assert "not audio the decoder can read" in failed.stderr
    assert "x.ogg" in failed.stderr
    folder = daemon.cli("transcribe", str(elsewhere), check=False)
    assert folder.returncode == 1
    assert f'"{elsewhere}": a folder: name the recordings in it' in folder.stderr
    assert speechkit.stats()["submissions"] == 2
    # `transcribe` takes what the daemon takes: an MP3 is converted like in a watched folder.
    converted = daemon.cli("transcribe", str(elsewhere / "three.mp3"))
    assert converted.stdout == f"==> {elsewhere / 'three.mp3'} <==\n{MONO_TXT}"
    assert (elsewhere / "three.txt").read_text() == MONO_TXT


def test_transcribe_while_the_daemon_runs_on_the_same_state_file(
    make_daemon: Callable[..., Daemon], inbox: Path, speechkit: LocalSpeechKit
) -> None:
    with make_daemon().start() as daemon:
        shutil.copy(fixture_path("mono.ogg"), inbox / "watched.ogg")
        done_outputs(inbox, "watched")
        shutil.copy(fixture_path("stereo.ogg"), inbox / "both.ogg")
        result = subprocess.run(
            [*command(), "transcribe", "-c", str(daemon.config), str(inbox / "both.ogg"),
             str(inbox / "watched.ogg")],
            env=daemon.env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert STEREO_TXT in result.stdout
        assert MONO_TXT in result.stdout  # answered from the daemon's result
        done_outputs(inbox, "both")
        assert speechkit.stats()["submissions"] == 2  # nobody paid twice
        assert daemon.status()["counts"]["done"] == 2
        assert daemon.stop() == 0


def test_after_done_move_and_delete(
    make_daemon: Callable[..., Daemon], inbox: Path, tmp_path: Path
) -> None:
    processed = inbox / "processed"  # inside the watched folder: must not loop
    tidy = tmp_path / "tidy"
    tidy.mkdir()
    daemon = make_daemon(
        watch_dirs=[inbox, tidy],
        watch=[
            {
                "path": str(inbox),
                "recursive": True,
                "after_done": "move",
                "move_to": str(processed),
            },
            {"path": str(tidy), "after_done": "delete"},
        ],
    )
    with daemon.start():
        shutil.copy(fixture_path("mono.ogg"), inbox / "call.ogg")
        shutil.copy(fixture_path("stereo.ogg"), tidy / "gone.ogg")
        wait_for((processed / "call.ogg").exists, "the audio to be moved")
        assert (processed / "call.txt").read_text() == MONO_TXT  # outputs follow the audio
        assert (processed / "call.json").exists()
        assert not (inbox / "call.ogg").exists()
        assert not (inbox / "call.txt").exists()
        wait_for(lambda: not (tidy / "gone.ogg").exists(), "the audio to be deleted")
        assert (tidy / "gone.txt").read_text() == STEREO_TXT
        shutil.copy(fixture_path("unicode.ogg"), inbox / "call.ogg")  # the same name again
        wait_for((processed / "call (2).ogg").exists, "the second call.ogg to be moved")
        assert (processed / "call (2).txt").read_text() == UNICODE_TXT
        assert daemon.stop() == 0
    assert daemon.log().count("settled") == 3  # moved files never came back as new work


def test_a_second_daemon_on_the_same_state_file_refuses_to_start(
    make_daemon: Callable[..., Daemon],
) -> None:
    first = make_daemon()
    with first.start():
        second = first.cli("run", check=False)
        assert second.returncode == 2
        assert "another speechkit-watch daemon is running on this state file" in second.stderr
        assert first.stop() == 0


def test_transcribe_finishes_a_file_a_stopped_daemon_left_pending(
    make_daemon: Callable[..., Daemon], inbox: Path, speechkit: LocalSpeechKit
) -> None:
    speechkit.set_config(seconds_per_minute=60.0)  # pending for a while
    daemon = make_daemon()
    with daemon.start():
        shutil.copy(fixture_path("mono.ogg"), inbox / "left.ogg")
        wait_for(lambda: speechkit.stats()["submissions"] == 1, "the submission")
        assert daemon.stop() == 0
    speechkit.set_config(seconds_per_minute=0.5)
    result = daemon.cli("transcribe", str(inbox / "left.ogg"))
    assert result.returncode == 0
    assert MONO_TXT in result.stdout
    assert speechkit.stats()["submissions"] == 1  # carried on, not submitted again


def _stages(stderr: str, name: str) -> list[str]:
    """The progress lines of one file, by stage name."""
    prefix = f'speechkit-watch: "{name}": '
    return [line[len(prefix) :].split(":")[0].split(" ")[0]
            for line in stderr.splitlines() if line.startswith(prefix)]  # fmt: skip


def test_transcribe_reports_each_stage_of_each_file(
    make_daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(fixture_path("stereo.ogg"), elsewhere / "call.ogg")
    shutil.copy(fixture_path("mono.ogg"), elsewhere / "memo.ogg")
    daemon = make_daemon()
    result = daemon.cli("transcribe", str(elsewhere / "call.ogg"), str(elsewhere / "memo.ogg"))
    assert result.returncode == 0, result.stderr
    for name in ("call.ogg", "memo.ogg"):
        path = str(elsewhere / name)
        assert _stages(result.stderr, path) == ["accepted", "uploaded", "submitted", "done"]
    call = [line for line in result.stderr.splitlines() if str(elsewhere / "call.ogg") in line]
    assert re.search(r"accepted: [0-9.]+ s of audio, 2 channels$", call[0]), call[0]
    assert re.search(r"submitted: operation \S+, expected ready at \d\d:\d\d:\d\d \(in about ",
                     call[2]), call[2]  # fmt: skip
    assert "Traceback" not in result.stderr
    assert STEREO_TXT in result.stdout  # stdout stays the transcripts only
    assert "accepted" not in result.stdout


def test_ctrl_c_in_transcribe_is_one_line_and_status_shows_when_it_is_expected(
    make_daemon: Callable[..., Daemon], tmp_path: Path, speechkit: LocalSpeechKit
) -> None:
    speechkit.set_config(seconds_per_minute=600.0)  # the service is slow: the file stays pending
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(fixture_path("mono.ogg"), elsewhere / "long.ogg")
    daemon = make_daemon(polling={"seconds_per_minute": 600.0})  # and expected to be
    daemon.env["PYTHONUNBUFFERED"] = "1"
    err = tmp_path / "transcribe.err"
    with err.open("wb") as sink:
        process = subprocess.Popen(
            [*command(), "transcribe", "-c", str(daemon.config), str(elsewhere / "long.ogg")],
            env=daemon.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=sink,
        )  # fmt: skip
    try:
        wait_for(lambda: "submitted: operation" in err.read_text(), "the submitted line")
        before = time.time()
        status = daemon.status()
        (item,) = status["in_progress"]
        assert item["state"] == "pending"
        ready = datetime.datetime.fromisoformat(item["expected_ready_at"]).timestamp()
        assert ready >= before - 1
        assert item["expected_ready_in_seconds"] > 0
        assert "expected ready" in daemon.cli("status").stdout
        lines_before = len(err.read_text().splitlines())
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=15) == 130
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.stdout is not None
    assert process.stdout.read() == b""
    process.stdout.close()
    text = err.read_text()
    new = text.splitlines()[lines_before:]
    assert new == [
        "speechkit-watch: interrupted; the files resume where they were on the next run"
    ], text
    assert "Traceback" not in text


def test_transcribe_with_a_refused_api_key_stops_at_once_and_fails_nothing(
    make_daemon: Callable[..., Daemon], tmp_path: Path, speechkit: LocalSpeechKit
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(fixture_path("mono.ogg"), elsewhere / "memo.ogg")
    daemon = make_daemon(env={"YC_API_KEY": "AQVN-not-a-key-this-service-knows"})
    refused = daemon.cli("transcribe", str(elsewhere / "memo.ogg"), check=False)
    assert refused.returncode == 1  # not a wait for a person who is right there
    assert "refused our credentials" in refused.stderr
    assert "speechkit.api_key" in refused.stderr
    assert "stopped: calls to recognition API are paused" in refused.stderr
    assert "AQVN-not-a-key" not in refused.stdout + refused.stderr
    assert speechkit.stats()["submissions"] == 0
    # Nothing was failed: with the right key the same file goes on from where it stopped.
    fixed = make_daemon()
    done = fixed.cli("transcribe", str(elsewhere / "memo.ogg"))
    assert done.stdout == f"==> {elsewhere / 'memo.ogg'} <==\n{MONO_TXT}"
    assert speechkit.stats()["submissions"] == 1
