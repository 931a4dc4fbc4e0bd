"""API v3 end to end: the daemon with `speechkit.api: v3`, without a bucket (inline audio) and
with faults; the crash points' v3 twins are in test_crash.py."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from daemon.speechkit.v3 import INLINE_LIMIT, MAX_INLINE_AUDIO_BYTES
from speechkit_local import LocalSpeechKit
from tests.e2e.harness import Daemon, wait_for
from tests.e2e.test_pipeline import MONO_TXT, done_outputs
from tests.fixtures_audio import fixture_path, larger_than, two_speakers

SPEAKERS_TXT = "[speaker 1] Hello from the watch folder.\n[speaker 2] This is a test recording.\n"
STEREO_LITERATURE_TXT = (
    "[channel 1] The left channel says good morning.\n"
    "[channel 2] The right channel answers good evening.\n"
)


def v3(speechkit: LocalSpeechKit, **extra: Any) -> dict[str, Any]:
    """Config keys of a daemon on API v3 without storage (audio inline)."""
    return {
        "speechkit": {"api": "v3", "stt_v3_url": speechkit.stt_v3_url},
        "storage": None,
        **extra,
    }


def test_without_a_bucket_speakers_and_channels_are_labelled_and_render_reads_v3(
    make_daemon: Callable[..., Daemon], inbox: Path, tmp_path: Path, speechkit: LocalSpeechKit
) -> None:
    recognition = {"speaker_labeling": True, "literature_text": True, "languages": ["en-US"]}
    daemon = make_daemon(**v3(speechkit, recognition=recognition, outputs=["txt", "json", "srt"]))
    checked = daemon.cli("check", check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "storage: none configured" in checked.stdout
    assert f"files up to {INLINE_LIMIT} (after conversion)" in checked.stdout  # as the docs say
    assert f"{speechkit.stt_v3_url} accepts" in checked.stdout  # probed; nothing created
    with daemon.start():
        (inbox / "meeting.ogg").write_bytes(two_speakers())
        (inbox / "meeting copy.ogg").write_bytes(two_speakers())  # same content: paid once
        shutil.copy(fixture_path("stereo.ogg"), inbox / "call.ogg")  # stereo: channels stay
        (inbox / "big.ogg").write_bytes(larger_than(MAX_INLINE_AUDIO_BYTES))
        text, saved = done_outputs(inbox, "meeting")
        assert text == SPEAKERS_TXT
        assert done_outputs(inbox, "call")[0] == STEREO_LITERATURE_TXT
        srt = (inbox / "meeting.srt").read_text(encoding="utf-8")
        assert "[speaker 2] This is a test recording." in srt
        operation, stream = saved["operation"], saved["getRecognition"]
        assert isinstance(operation, dict)
        assert isinstance(stream, list)
        assert operation["done"] is True
        events = [next(iter(set(message["result"]) & {"final", "eouUpdate", "finalRefinement"}))
                  for message in stream]  # fmt: skip
        assert events == ["final", "eouUpdate", "finalRefinement"] * 2  # unchanged, in order
        assert done_outputs(inbox, "meeting copy")[0] == SPEAKERS_TXT
        daemon.wait_for_count("done", 3)
        wait_for((inbox / "big.error.json").exists, "big.error.json")
        error = json.loads((inbox / "big.error.json").read_text(encoding="utf-8"))
        assert error["stage"] == "check"
        assert "configure `storage`" in error["message"]
        assert daemon.stop() == 0
    stats = speechkit.stats()
    assert stats["v3"]["inline"] == stats["submissions"] == 2
    wait_for(lambda: speechkit.stats()["v3"]["deleted"] == 2, "the results deleted")
    (inbox / "meeting.txt").unlink()
    rendered = daemon.cli("render", str(inbox / "meeting.json"))
    assert "read an API v3 result" in rendered.stderr
    assert (inbox / "meeting.txt").read_text(encoding="utf-8") == SPEAKERS_TXT
    # `transcribe` takes the same way: one speaker, labelled as such.
    solo = tmp_path / "solo.ogg"
    shutil.copy(fixture_path("mono.ogg"), solo)
    transcribed = daemon.cli("transcribe", str(solo))
    assert 'solo.ogg": submitted: operation' in transcribed.stderr  # its stages are shown,
    assert 'solo.ogg": uploaded' not in transcribed.stderr  # but without storage none uploads
    printed = transcribed.stdout
    assert printed.endswith(
        "[speaker 1] Hello from the watch folder.\n[speaker 1] This is a test recording.\n"
    )


def test_v3_survives_a_refused_key_a_refused_check_a_forgotten_operation_a_lost_answer(
    make_daemon: Callable[..., Daemon], inbox: Path, speechkit: LocalSpeechKit
) -> None:
    speechkit.set_config(seconds_per_minute=60.0)  # pending long enough to forget it
    speechkit.set_faults(auth_fail=True)  # first the key is refused: a pause, not a failure
    with make_daemon(**v3(speechkit, auth_retry_seconds=1)).start() as daemon:
        shutil.copy(fixture_path("mono.ogg"), inbox / "old.ogg")
        wait_for(lambda: "refused our credentials" in daemon.log(), "the credential pause")
        speechkit.set_faults(auth_fail=False)
        pending = wait_for(
            lambda: [item for item in daemon.status()["in_progress"] if item["operation_id"]],
            "an operation id",
        )
        # A status check is refused by the quota; then the operation is unknown (404); then the
        # answer to its resubmission is lost (the operation exists and is billed).

        def injected(endpoint: str, kind: str) -> int:
            return int(speechkit.stats()["faults_injected"][endpoint][kind])

        speechkit.set_faults(
            rate_limit_rate=1.0, rate_limit_endpoints=["operation"], retry_after_seconds=1
        )
        speechkit.set_config(seconds_per_minute=0.5)
        assert speechkit.expire_operation(pending[0]["operation_id"])
        wait_for(lambda: injected("operation", "rate_limit") >= 1, "a refused status check")
        speechkit.set_faults(
            rate_limit_rate=0.0, drop_rate=1.0, drop_after_create=True, drop_endpoints=["submit"]
        )
        wait_for(lambda: injected("submit", "drop_after_create") >= 1, "a lost answer")
        speechkit.set_faults(drop_rate=0.0)
        text, saved = done_outputs(inbox, "old")
        assert text == MONO_TXT
        operation = saved["operation"]
        assert isinstance(operation, dict)
        assert operation["id"] != pending[0]["operation_id"]
        log = daemon.log()
        assert "unknown to the service" in log
        assert "may be billed twice" in log
        stats = speechkit.stats()
        assert stats["faults_injected"]["operation"]["rate_limit"] >= 1
        assert stats["submissions"] == 2 + stats["faults_injected"]["submit"]["drop_after_create"]
        assert daemon.status()["counts"]["failed"] == 0
        assert daemon.stop() == 0


def test_v3_only_options_with_api_v2_are_a_config_error_naming_both_keys(
    make_daemon: Callable[..., Daemon],
) -> None:
    daemon = make_daemon(recognition={"speaker_labeling": True})
    result = daemon.cli("check", check=False)
    assert result.returncode == 2
    assert "recognition.speaker_labeling" in result.stderr
    assert "speechkit.api" in result.stderr
