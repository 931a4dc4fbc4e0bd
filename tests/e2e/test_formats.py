"""Recordings as people have them (WAV, MP3, M4A, FLAC, WebM, MKV, AMR, video) are converted to
Ogg Opus locally and transcribed; files without audio fail at `check` and are never uploaded."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from speechkit_local import LocalSpeechKit, devstack
from tests.e2e.harness import Daemon, leftovers, wait_for
from tests.fixtures_audio import fixture_path

MONO_TXT = "hello from the watch folder\nthis is a test recording\n"
STEREO_TXT = (
    "[channel 1] the left channel says good morning\n"
    "[channel 2] the right channel answers good evening\n"
)
MONO_SECONDS = 3.972  # mono.ogg, which the mono format fixtures were made from
STEREO_SECONDS = 2.451  # stereo.ogg, likewise
AMR_SECONDS = 4.108  # mono.amr: the encoder's last frames pad mono.ogg's speech (ffprobe)
# Encoders pad (MP3, AAC frames) and Opus rounds to its 20 ms frames.
DURATION_TOLERANCE = 0.15

# Fixture under tests/data/formats -> (expected .txt, channels, seconds per channel).
CONVERTED = {
    "call_stereo.wav": (STEREO_TXT, 2, STEREO_SECONDS),
    "alaw_8k.wav": (MONO_TXT, 1, MONO_SECONDS),
    "mono.mp3": (MONO_TXT, 1, MONO_SECONDS),
    "mono.m4a": (MONO_TXT, 1, MONO_SECONDS),
    "mono.flac": (MONO_TXT, 1, MONO_SECONDS),
    "stereo.webm": (STEREO_TXT, 2, STEREO_SECONDS),
    "video.mp4": (STEREO_TXT, 2, STEREO_SECONDS),
    "stereo.mkv": (STEREO_TXT, 2, STEREO_SECONDS),
    "video.mov": (MONO_TXT, 1, MONO_SECONDS),
    # AMR has no tags, so no sentence reaches the echo engine: an empty transcript, no chunks.
    "mono.amr": ("", 1, AMR_SECONDS),
}


def formats_path(name: str) -> Path:
    return fixture_path("formats") / name


def work_dir(tmp_path: Path) -> Path:
    """The daemon's conversion folder: beside the state file the e2e config names."""
    return tmp_path / "state" / "state.db.audio"


def outputs(folder: Path, name: str) -> tuple[str, dict[str, object]]:
    txt, result = folder / f"{name}.txt", folder / f"{name}.json"
    wait_for(lambda: txt.exists() and result.exists(), f"{name}.txt and {name}.json")
    return txt.read_text(encoding="utf-8"), json.loads(result.read_text(encoding="utf-8"))


def error_of(folder: Path, name: str) -> dict[str, object]:
    error = folder / f"{name}.error.json"
    wait_for(error.exists, f"{name}.error.json")
    document = json.loads(error.read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


def test_every_format_is_converted_and_transcribed_with_its_channels_and_duration(
    make_daemon: Callable[..., Daemon],
    inbox: Path,
    tmp_path: Path,
    speechkit: LocalSpeechKit,
    seaweedfs: devstack.SeaweedFS,
    bucket: str,
) -> None:
    with make_daemon().start() as daemon:
        for name in CONVERTED:
            # Distinct stems: mono.mp3 and mono.m4a in one folder would share one.
            shutil.copy(formats_path(name), inbox / f"{name.replace('.', '_')}{Path(name).suffix}")
        for name, (expected, channels, _) in CONVERTED.items():
            text, operation = outputs(inbox, name.replace(".", "_"))
            assert text == expected, name
            response = operation["response"]
            assert isinstance(response, dict)
            tags = {chunk["channelTag"] for chunk in response.get("chunks", [])}
            spoken = range(1, channels + 1) if expected else range(0)
            assert tags == {str(number) for number in spoken}, name
        received = speechkit.stats()["received"]
        assert len(received) == len(CONVERTED)
        # What the service got: Ogg Opus with the source's channels and length.
        got = sorted((entry["channels"], entry["duration_seconds"]) for entry in received)
        wanted = sorted((channels, seconds) for _, channels, seconds in CONVERTED.values())
        for (got_channels, got_seconds), (channels, seconds) in zip(got, wanted, strict=True):
            assert got_channels == channels
            assert got_seconds == pytest.approx(seconds, abs=DURATION_TOLERANCE)
        assert speechkit.stats()["submissions"] == len(CONVERTED)
        log = daemon.log()
        assert log.count("converted to Ogg Opus") == len(CONVERTED)
        assert leftovers(inbox) == []
        assert list(inbox.glob("*.error.json")) == []
        wait_for(lambda: seaweedfs.list_keys(bucket=bucket) == [], "the bucket to be emptied")
        assert list(work_dir(tmp_path).iterdir()) == []  # conversions are removed once uploaded
        assert daemon.stop() == 0


@pytest.mark.parametrize(
    ("fixture", "dropped", "reason"),
    [
        ("notes.wav", "notes.wav", "not audio the decoder can read: Invalid data found"),
        ("video_no_audio.mp4", "screen.mp4", "has no audio stream (streams: video)"),
    ],
)
def test_a_file_without_audio_fails_at_check_with_the_decoders_reason_and_is_not_uploaded(
    make_daemon: Callable[..., Daemon],
    inbox: Path,
    speechkit: LocalSpeechKit,
    seaweedfs: devstack.SeaweedFS,
    bucket: str,
    fixture: str,
    dropped: str,
    reason: str,
) -> None:
    with make_daemon().start() as daemon:
        shutil.copy(formats_path(fixture), inbox / dropped)
        error = error_of(inbox, Path(dropped).stem)
        assert error["stage"] == "check"
        assert reason in str(error["message"])
        assert not (inbox / f"{Path(dropped).stem}.txt").exists()
        assert speechkit.stats()["submissions"] == 0
        assert seaweedfs.list_keys(bucket=bucket) == []
        assert daemon.status()["counts"]["failed"] == 1
        assert daemon.stop() == 0


def test_content_decides_not_the_name_and_same_source_is_recognised_once(
    make_daemon: Callable[..., Daemon],
    inbox: Path,
    speechkit: LocalSpeechKit,
) -> None:
    with make_daemon().start() as daemon:
        # WAV data named .mp3, and the same bytes again under another name.
        shutil.copy(formats_path("alaw_8k.wav"), inbox / "first.mp3")
        assert outputs(inbox, "first")[0] == MONO_TXT
        shutil.copy(formats_path("alaw_8k.wav"), inbox / "again.wav")
        assert outputs(inbox, "again")[0] == MONO_TXT
        assert speechkit.stats()["submissions"] == 1
        assert daemon.stop() == 0


def test_more_than_two_channels_are_mixed_down_to_mono_and_the_log_says_so(
    make_daemon: Callable[..., Daemon],
    inbox: Path,
    speechkit: LocalSpeechKit,
) -> None:
    with make_daemon().start() as daemon:
        shutil.copy(fixture_path("three_channels.ogg"), inbox / "three.ogg")
        text, _ = outputs(inbox, "three")
        assert text == "one\n"  # mono: only channel 1's sentence (TRANSCRIPT) is echoed
        assert [entry["channels"] for entry in speechkit.stats()["received"]] == [1]
        assert "3 channels; recognition takes at most 2, so they are mixed down" in daemon.log()
        assert daemon.stop() == 0


def test_ogg_opus_goes_up_unconverted(
    make_daemon: Callable[..., Daemon],
    inbox: Path,
    speechkit: LocalSpeechKit,
) -> None:
    with make_daemon().start() as daemon:
        shutil.copy(fixture_path("stereo.ogg"), inbox / "call.ogg")
        assert outputs(inbox, "call")[0] == STEREO_TXT
        received = speechkit.stats()["received"]
        assert [entry["sha256"] for entry in received] == [sha256_of(fixture_path("stereo.ogg"))]
        assert "converted" not in daemon.log()
        assert daemon.stop() == 0


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_crash_mid_conversion_leaves_a_temp_file_that_is_removed_and_redone(
    make_daemon: Callable[..., Daemon],
    inbox: Path,
    tmp_path: Path,
    speechkit: LocalSpeechKit,
) -> None:
    daemon = make_daemon()
    daemon.start({"SPEECHKIT_WATCH_CRASH_AT": "mid_conversion"})
    shutil.copy(formats_path("call_stereo.wav"), inbox / "call.wav")
    wait_for(daemon.process_exited, "the daemon to crash mid-conversion")
    left = list(work_dir(tmp_path).iterdir())
    assert len(left) == 1
    assert left[0].name.endswith(".ogg.partial")
    assert not (inbox / "call.txt").exists()
    with daemon.start():
        assert outputs(inbox, "call")[0] == STEREO_TXT
        assert list(work_dir(tmp_path).iterdir()) == []
        assert speechkit.stats()["submissions"] == 1
        assert daemon.stop() == 0


def test_two_recordings_with_one_stem_never_overwrite_each_others_outputs(
    make_daemon: Callable[..., Daemon], inbox: Path
) -> None:
    with make_daemon().start() as daemon:
        shutil.copy(formats_path("call_stereo.wav"), inbox / "call.wav")
        assert outputs(inbox, "call")[0] == STEREO_TXT
        shutil.copy(formats_path("mono.mp3"), inbox / "call.mp3")
        assert outputs(inbox, "call.mp3")[0] == MONO_TXT  # the later one: its whole name
        daemon.wait_for_count("done", 2)
        assert (inbox / "call.txt").read_text(encoding="utf-8") == STEREO_TXT  # untouched
        assert "call.mp3.txt" in daemon.log()  # the log says where its outputs went
        assert daemon.stop() == 0
    with daemon.start():  # the names stay after a restart, and rewriting the first keeps its
        (inbox / "call.wav").write_bytes(formats_path("alaw_8k.wav").read_bytes())
        wait_for(lambda: (inbox / "call.txt").read_text(encoding="utf-8") == MONO_TXT,
                 "call.txt of the rewritten call.wav")  # fmt: skip
        assert (inbox / "call.mp3.txt").read_text(encoding="utf-8") == MONO_TXT
        assert not (inbox / "call.wav.txt").exists()
        assert daemon.stop() == 0
