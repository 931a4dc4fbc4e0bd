"""The first step's check and hash of a recording: one after the other for a small file, side by
side for a large one, with the same results and the same refusals."""

from __future__ import annotations

import hashlib
import shutil
import threading
from pathlib import Path

import pytest

from daemon import audio
from daemon.steps import prepare

DATA = Path(__file__).resolve().parents[1] / "data"


def hashed_in(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the threads that hash, as `checked_and_hashed` calls `sha256_file`."""
    threads: list[str] = []
    real = prepare.sha256_file

    def recording(path: Path) -> str:
        threads.append(threading.current_thread().name)
        return real(path)

    monkeypatch.setattr(prepare, "sha256_file", recording)
    return threads


@pytest.mark.parametrize("large", [False, True], ids=["small", "large"])
def test_a_recording_is_checked_and_hashed_alike_at_any_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, large: bool
) -> None:
    recording = tmp_path / "call.ogg"
    shutil.copy(DATA / "stereo.ogg", recording)
    size = recording.stat().st_size
    monkeypatch.setattr(prepare, "HASH_BESIDE_CHECK_BYTES", size if large else size + 1)
    threads = hashed_in(monkeypatch)
    info, digest = prepare.checked_and_hashed(recording, size, tmp_path / "work", 7)
    assert digest == hashlib.sha256(recording.read_bytes()).hexdigest()
    assert (info.upload_path, info.channels, info.converted) == (recording, 2, False)
    assert info.duration_seconds == audio.prepare(recording).duration_seconds
    here = threading.current_thread().name
    assert (threads[0] != here) is large  # a large file's hash runs beside the check


def test_a_large_file_that_is_not_audio_is_refused_as_a_small_one_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    notes = tmp_path / "notes.ogg"
    notes.write_bytes(b"these are notes, not a recording\n" * 100)
    monkeypatch.setattr(prepare, "HASH_BESIDE_CHECK_BYTES", 1)
    with pytest.raises(audio.AudioRefused) as large:
        prepare.checked_and_hashed(notes, notes.stat().st_size, tmp_path / "work", 1)
    with pytest.raises(audio.AudioRefused) as small:
        audio.prepare(notes, tmp_path / "work", "2")
    assert (large.value.code, large.value.reason) == (small.value.code, small.value.reason)


def test_a_large_file_that_cannot_be_read_fails_as_it_would_unhashed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "gone.ogg"
    monkeypatch.setattr(prepare, "HASH_BESIDE_CHECK_BYTES", 1)
    with pytest.raises(FileNotFoundError):
        prepare.checked_and_hashed(missing, 10**9, tmp_path / "work", 1)
