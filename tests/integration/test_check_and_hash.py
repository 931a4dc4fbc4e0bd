"""The first step's check and hash of a recording: one after the other for a small file, side by
side for a large one, with the same results and the same refusals."""

from __future__ import annotations

import hashlib
import shutil
import threading
from pathlib import Path
from typing import Any

import pytest

from daemon import audio
from daemon.steps import prepare

DATA = Path(__file__).resolve().parents[1] / "data"
HANDSHAKE_SECONDS = 10.0  # a guard against a deadlock, never reached when all is well


def recording(tmp_path: Path) -> tuple[Path, int]:
    path = tmp_path / "call.ogg"
    shutil.copy(DATA / "stereo.ogg", path)
    return path, path.stat().st_size


def not_audio(tmp_path: Path) -> Path:
    path = tmp_path / "notes.ogg"
    path.write_bytes(b"these are notes, not a recording\n" * 100)
    return path


@pytest.mark.parametrize("large", [False, True], ids=["small", "large"])
def test_a_recording_is_checked_and_hashed_alike_at_any_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, large: bool
) -> None:
    path, size = recording(tmp_path)
    monkeypatch.setattr(prepare, "HASH_BESIDE_CHECK_BYTES", size if large else size + 1)
    info, digest = prepare.checked_and_hashed(path, size, tmp_path / "work", 7)
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    assert (info.upload_path, info.channels, info.converted) == (path, 2, False)
    assert info.duration_seconds == audio.prepare(path).duration_seconds


def test_a_large_recording_is_hashed_while_it_is_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each side waits for the other to have begun: done one after the other, in either order
    or thread, one of them would wait in vain."""
    path, size = recording(tmp_path)
    monkeypatch.setattr(prepare, "HASH_BESIDE_CHECK_BYTES", size)
    checking, hashing = threading.Event(), threading.Event()
    met: list[bool] = []
    real_hash, real_check = prepare.sha256_file, audio.prepare

    def hash_when_the_check_runs(file: Path, stop: threading.Event | None = None) -> str:
        hashing.set()
        met.append(checking.wait(HANDSHAKE_SECONDS))
        return real_hash(file, stop)

    def check_when_the_hash_runs(file: Path, *args: Any) -> audio.PreparedAudio:
        checking.set()
        met.append(hashing.wait(HANDSHAKE_SECONDS))
        return real_check(file, *args)

    monkeypatch.setattr(prepare, "sha256_file", hash_when_the_check_runs)
    monkeypatch.setattr(audio, "prepare", check_when_the_hash_runs)
    info, digest = prepare.checked_and_hashed(path, size, tmp_path / "work", 7)
    assert met == [True, True]
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    assert info.channels == 2


def test_a_large_file_that_is_not_audio_is_refused_as_a_small_one_and_its_hash_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    notes = not_audio(tmp_path)
    monkeypatch.setattr(prepare, "HASH_BESIDE_CHECK_BYTES", 1)
    stops: list[threading.Event] = []
    real_hash = prepare.sha256_file

    def hash_noting_its_stop(file: Path, stop: threading.Event | None = None) -> str:
        assert stop is not None
        stops.append(stop)
        return real_hash(file, stop)

    monkeypatch.setattr(prepare, "sha256_file", hash_noting_its_stop)
    with pytest.raises(audio.AudioRefused) as large:
        prepare.checked_and_hashed(notes, notes.stat().st_size, tmp_path / "work", 1)
    with pytest.raises(audio.AudioRefused) as small:
        audio.prepare(notes, tmp_path / "work", "2")
    assert (large.value.code, large.value.reason) == (small.value.code, small.value.reason)
    assert len(stops) == 1
    assert stops[0].is_set()  # the hash of a refused file is not finished for nothing


def test_the_checks_refusal_comes_before_the_hashs_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    notes = not_audio(tmp_path)
    monkeypatch.setattr(prepare, "HASH_BESIDE_CHECK_BYTES", 1)

    def unreadable(file: Path, stop: threading.Event | None = None) -> str:
        raise PermissionError(13, "Permission denied", str(file))

    monkeypatch.setattr(prepare, "sha256_file", unreadable)
    with pytest.raises(audio.AudioRefused):  # as for a small file: refused, not "unreadable"
        prepare.checked_and_hashed(notes, notes.stat().st_size, tmp_path / "work", 1)


def test_a_hash_told_to_stop_ends_without_a_digest(tmp_path: Path) -> None:
    path, _ = recording(tmp_path)
    stop = threading.Event()
    assert prepare.sha256_file(path, stop) == hashlib.sha256(path.read_bytes()).hexdigest()
    stop.set()
    assert prepare.sha256_file(path, stop) == ""


def test_a_large_file_that_cannot_be_read_fails_as_it_would_unhashed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "gone.ogg"
    monkeypatch.setattr(prepare, "HASH_BESIDE_CHECK_BYTES", 1)
    with pytest.raises(FileNotFoundError):
        prepare.checked_and_hashed(missing, 10**9, tmp_path / "work", 1)
