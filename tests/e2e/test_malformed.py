"""Malformed answers are no transcripts, and what the daemon writes, `render` reads.

The local server answers the next operation's status checks with a malformed done operation
(`malformed_kind`, `malformed_next`); the daemon must check it again a few times and then fail
the file at stage "recognition" naming what was malformed: never an empty transcript that looks
like silence.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from daemon.steps import MALFORMED_RESULT_CHECKS
from speechkit_local import LocalSpeechKit
from tests.e2e.harness import Daemon
from tests.e2e.test_pipeline import MONO_TXT, STEREO_TXT, UNICODE_TXT, done_outputs
from tests.fixtures_audio import fixture_path

MALFORMED_PARTS = {
    "no_response": "response is missing",
    "null_response": "response is null",
    "chunks_not_list": "response.chunks is a string",
    "error_string": "error is a string",
}
MALFORMED_PREFIX = "the service answered with a malformed result: "


@pytest.mark.parametrize("kind", sorted(MALFORMED_PARTS))
def test_a_malformed_answer_fails_the_file_and_writes_no_transcript(
    make_daemon: Callable[..., Daemon], inbox: Path, speechkit: LocalSpeechKit, kind: str
) -> None:
    speechkit.set_faults(malformed_kind=kind, malformed_next=1)
    with make_daemon().start() as daemon:
        shutil.copy(fixture_path("mono.ogg"), inbox / "garbled.ogg")
        status = daemon.wait_for_count("failed", 1)
        [failed] = status["failed"]
        assert failed["stage"] == "recognition"
        assert MALFORMED_PREFIX + MALFORMED_PARTS[kind] in failed["reason"]
        assert "speechkit-watch retry" in failed["reason"]
        error = json.loads((inbox / "garbled.error.json").read_text(encoding="utf-8"))
        assert error["stage"] == "recognition"
        assert MALFORMED_PARTS[kind] in error["message"]
        assert error["operation_id"].startswith("e03")
        assert not (inbox / "garbled.txt").exists()
        assert not (inbox / "garbled.json").exists()
        # Checked again before failing, with backoff: one warning per malformed answer but the last.
        assert daemon.log().count(MALFORMED_PREFIX) >= MALFORMED_RESULT_CHECKS - 1

        shutil.copy(fixture_path("mono.ogg"), inbox / "fine.ogg")
        assert done_outputs(inbox, "fine")[0] == MONO_TXT
        assert daemon.stop() == 0
    stats = speechkit.stats()
    assert stats["faults_injected"]["submit"]["malformed"] == 1
    assert stats["submissions"] == 2  # the malformed one is failed, not paid for again


def test_retry_reaches_a_file_failed_by_a_malformed_answer(
    make_daemon: Callable[..., Daemon], inbox: Path, speechkit: LocalSpeechKit
) -> None:
    speechkit.set_faults(malformed_kind="chunks_not_list", malformed_next=1)
    with make_daemon().start() as daemon:
        shutil.copy(fixture_path("mono.ogg"), inbox / "garbled.ogg")
        daemon.wait_for_count("failed", 1)
        assert "re-queued 1 file(s)" in daemon.cli("retry", str(inbox / "garbled.ogg")).stdout
        status = daemon.status()
        assert status["counts"]["failed"] == 0
        assert [row["path"] for row in status["in_progress"]] == [str(inbox / "garbled.ogg")]
        assert daemon.stop() == 0


def test_render_reads_every_result_the_daemon_writes(
    make_daemon: Callable[..., Daemon], inbox: Path
) -> None:
    expected = {"memo": MONO_TXT, "call": STEREO_TXT, "note": UNICODE_TXT, "quiet": ""}
    fixtures = {"memo": "mono.ogg", "call": "stereo.ogg", "note": "unicode.ogg",
                "quiet": "silence.ogg"}  # fmt: skip
    with make_daemon().start() as daemon:
        for stem, fixture in fixtures.items():
            shutil.copy(fixture_path(fixture), inbox / f"{stem}.ogg")
        for stem in fixtures:
            done_outputs(inbox, stem)
        assert daemon.stop() == 0
    for stem in fixtures:
        (inbox / f"{stem}.txt").unlink()
    offline = make_daemon(outputs=["txt", "srt"])
    results = [str(inbox / f"{stem}.json") for stem in fixtures]
    rendered = offline.cli("render", *results, check=False)
    assert rendered.returncode == 0, rendered.stderr
    for stem, text in expected.items():
        assert (inbox / f"{stem}.txt").read_text(encoding="utf-8") == text
        assert "None" not in (inbox / f"{stem}.srt").read_text(encoding="utf-8")


def test_render_names_what_is_malformed_in_a_result(
    make_daemon: Callable[..., Daemon], inbox: Path
) -> None:
    garbled = inbox / "garbled.json"
    garbled.write_text(json.dumps({"done": True, "id": "e03x", "response": {"chunks": "hi"}}))
    rendered = make_daemon().cli("render", str(garbled), check=False)
    assert rendered.returncode == 1
    assert "garbled.json" in rendered.stderr
    assert "not a finished recognition result: response.chunks is a string" in rendered.stderr
    assert not (inbox / "garbled.txt").exists()
