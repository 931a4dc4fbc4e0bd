"""Retention on real files and a real state file, with an injected clock: after_done and
after_failed after a delay, and the state file forgetting files long gone."""

from __future__ import annotations

import functools
import logging
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon import config, layout, lifecycle, state
from daemon.aftercare import Aftercare
from daemon.lifecycle import State
from daemon.retention import DAY_SECONDS
from daemon.storage import ObjectStore
from tests.unit.test_config import minimal, parse

NOW = 1_800_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    folder = tmp_path / "inbox"
    folder.mkdir()
    return folder


@pytest.fixture
def store(tmp_path: Path) -> Iterator[state.Store]:
    opened = state.Store(tmp_path / "state.db")
    yield opened
    opened.close()


def settings(tmp_path: Path, *folders: dict[str, Any], **top: Any) -> config.Config:
    return parse(minimal(watch=list(folders), state_file=str(tmp_path / "state.db"), **top))


@functools.cache
def objects() -> ObjectStore:
    """One client for every test (building a boto3 client is slow); retention never calls it."""
    storage = parse(minimal()).storage
    assert storage is not None
    return ObjectStore(storage)


class Files:
    """Finished files as the pipeline leaves them: audio, outputs (or error file), a row."""

    def __init__(self, settings: config.Config, store: state.Store, clock: Clock) -> None:
        self.clock = clock
        self.store = store
        self.care = Aftercare(
            settings, store, objects(), clock=clock,
            stopping=threading.Event(),
        )  # fmt: skip

    def root(self, audio: Path) -> Path:
        return layout.folder_for(str(audio), self.care.config.watch).path

    def finish(self, audio: Path, ended: State = State.DONE) -> state.FileRow:
        audio.write_bytes(b"OggS audio")
        stat = audio.stat()
        now = self.clock()
        row_id = self.store.add_version(
            path=str(audio), folder=str(self.root(audio)), size=stat.st_size,
            mtime_ns=stat.st_mtime_ns, now=now,
        )  # fmt: skip
        row = self.store.get(row_id)
        retain_at = self.care.due_at(row, ended, now)
        if ended == State.DONE:
            for extension in ("txt", "json"):
                audio.with_suffix(f".{extension}").write_text("transcript")
            change = lifecycle.finished(now, 1, hook=False, retain_at=retain_at)
        else:
            audio.with_suffix(".error.json").write_text("{}")
            change = lifecycle.failed(now, "check", "not audio", None, hook=False,
                                      retain_at=retain_at)  # fmt: skip
        assert self.store.apply(row, change, now)
        finished = self.store.get(row_id)
        self.care.after_done(finished)  # what Finish.finish and Setbacks.fail do
        return self.store.get(row_id)


def deleting_after(
    days: float, tmp_path: Path, inbox: Path, store: state.Store
) -> tuple[Clock, Files]:
    """A clock, and an inbox whose audio is deleted `days` after its transcript."""
    clock = Clock()
    folder = {"path": str(inbox), "after_done": "delete", "after_done_days": days}
    return clock, Files(settings(tmp_path, folder), store, clock)


def test_audio_is_deleted_only_once_its_delay_has_passed_and_its_outputs_stay(
    tmp_path: Path, inbox: Path, store: state.Store, caplog: pytest.LogCaptureFixture
) -> None:
    clock, files = deleting_after(30, tmp_path, inbox, store)
    audio = inbox / "call.ogg"
    row = files.finish(audio)
    assert audio.exists()  # a delay: not at once
    assert row.due_at == NOW + 30 * DAY_SECONDS
    clock.now = NOW + 29 * DAY_SECONDS
    files.care.sweep_retention()
    assert audio.exists()
    clock.now = NOW + 30 * DAY_SECONDS
    with caplog.at_level(logging.INFO, logger="daemon.aftercare"):
        files.care.sweep_retention()
    assert not audio.exists()
    assert (inbox / "call.txt").read_text() == "transcript"
    assert (inbox / "call.json").exists()
    assert store.get(row.id).due_at is None  # done with: never looked at again
    assert f'deleted "{audio}" (after_done: delete, 30 days after its end)' in caplog.text


def test_without_a_delay_the_audio_goes_at_once_as_before(
    tmp_path: Path, inbox: Path, store: state.Store
) -> None:
    moved = tmp_path / "done"
    files = Files(
        settings(tmp_path, {"path": str(inbox), "after_done": "move", "move_to": str(moved)}),
        store, Clock(),
    )  # fmt: skip
    row = files.finish(inbox / "call.ogg")
    assert (moved / "call.ogg").exists()
    assert (moved / "call.txt").exists()  # the outputs beside it move along
    assert row.moved_to == str(moved / "call.ogg")
    assert row.due_at is None


def test_a_shorter_delay_applies_to_files_already_waiting(
    tmp_path: Path, inbox: Path, store: state.Store
) -> None:
    clock = Clock()
    folder = {"path": str(inbox), "after_done": "delete", "after_done_days": 30}
    files = Files(settings(tmp_path, folder), store, clock)
    audio = inbox / "call.ogg"
    files.finish(audio)
    files.care.config = settings(tmp_path, {**folder, "after_done_days": 7})  # a reload
    clock.now = NOW + 7 * DAY_SECONDS
    files.care.sweep_retention()
    assert not audio.exists()


def test_audio_whose_transcript_is_gone_is_kept(
    tmp_path: Path, inbox: Path, store: state.Store, caplog: pytest.LogCaptureFixture
) -> None:
    clock, files = deleting_after(1, tmp_path, inbox, store)
    audio = inbox / "call.ogg"
    row = files.finish(audio)
    (inbox / "call.json").unlink()
    clock.now = NOW + 2 * DAY_SECONDS
    files.care.sweep_retention()
    assert audio.exists()
    missing = inbox / "call.json"
    assert f'"{audio}" kept although after_done says delete: "{missing}" is missing' in caplog.text
    assert store.get(row.id).due_at is None  # said once, not every hour


def test_a_failed_file_is_moved_with_its_error_file_after_its_own_delay(
    tmp_path: Path, inbox: Path, store: state.Store
) -> None:
    clock = Clock()
    failed_dir = tmp_path / "failed"
    files = Files(settings(tmp_path, {
        "path": str(inbox), "after_done": "delete", "after_failed": "move",
        "after_failed_days": 7, "failed_move_to": str(failed_dir),
    }), store, clock)  # fmt: skip
    (inbox / "sub").mkdir()
    audio = inbox / "sub" / "bad.ogg"
    row = files.finish(audio, State.FAILED)
    assert audio.exists()  # after_done (delete at once) is not for failed files
    clock.now = NOW + 7 * DAY_SECONDS
    files.care.sweep_retention()
    assert not audio.exists()
    assert (failed_dir / "sub" / "bad.ogg").exists()  # subfolders kept
    assert (failed_dir / "sub" / "bad.error.json").exists()
    assert store.get(row.id).moved_to == str(failed_dir / "sub" / "bad.ogg")


def test_rows_of_files_long_gone_are_forgotten_and_the_others_kept(
    tmp_path: Path, inbox: Path, store: state.Store, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    share = tmp_path / "share"
    share.mkdir()
    files = Files(
        settings(tmp_path, {"path": str(inbox)}, {"path": str(share)}, state_retention_days=90),
        store, clock,
    )  # fmt: skip
    deleted = files.finish(inbox / "deleted.ogg")
    for leftover in inbox.glob("deleted.*"):
        leftover.unlink()  # audio and outputs: nothing left of it
    transcript_kept = files.finish(inbox / "transcript.ogg")
    (inbox / "transcript.ogg").unlink()  # its outputs still hold the name "transcript"
    kept = files.finish(inbox / "kept.ogg")
    older = files.finish(inbox / "again.ogg")
    newer_id = store.add_version(path=str(inbox / "again.ogg"), folder=str(inbox), size=1,
                                 mtime_ns=1, now=NOW)  # fmt: skip
    unmounted = files.finish(share / "remote.ogg")
    clock.now = NOW + 60 * DAY_SECONDS
    recent = files.finish(inbox / "recent.ogg")
    for leftover in inbox.glob("recent.*"):
        leftover.unlink()
    shutil.rmtree(share)  # as if unmounted: its files look gone, but it is the mount that is
    clock.now = NOW + 91 * DAY_SECONDS
    with caplog.at_level(logging.INFO, logger="daemon.aftercare"):
        assert files.care.prune_state(clock.now) == 2
    remaining = {row.id for row in store.in_states(state.ALL_STATES)}
    assert deleted.id not in remaining
    assert older.id not in remaining
    assert {kept.id, transcript_kept.id, newer_id, unmounted.id, recent.id} <= remaining
    assert "forgot 2 file(s) gone for more than 90 days (state_retention_days)" in caplog.text
    # Nothing is known of a file whose row was forgotten: it counts as new if it comes back.
    assert str(inbox / "deleted.ogg") not in store.known_versions()


def test_audio_on_a_share_that_is_not_mounted_waits_for_it(
    tmp_path: Path, inbox: Path, store: state.Store
) -> None:
    clock, files = deleting_after(1, tmp_path, inbox, store)
    row = files.finish(inbox / "call.ogg")
    hidden = tmp_path / "unmounted"
    inbox.rename(hidden)  # as if unmounted: the file looks gone, but it is the mount that is
    clock.now = NOW + 2 * DAY_SECONDS
    files.care.sweep_retention()
    assert store.get(row.id).due_at is not None  # still to do
    hidden.rename(inbox)  # mounted again
    files.care.sweep_retention()
    assert not (inbox / "call.ogg").exists()
    assert store.get(row.id).due_at is None


def test_the_row_of_audio_moved_away_with_its_outputs_is_forgotten(
    tmp_path: Path, inbox: Path, store: state.Store
) -> None:
    clock = Clock()
    moved = tmp_path / "done"
    folder = {"path": str(inbox), "after_done": "move", "move_to": str(moved)}
    files = Files(settings(tmp_path, folder), store, clock)
    row = files.finish(inbox / "call.ogg")
    assert (moved / "call.json").exists()  # outputs went along: no names held in the inbox
    clock.now = NOW + 91 * DAY_SECONDS
    assert files.care.prune_state(clock.now) == 1
    assert row.id not in {other.id for other in store.in_states(state.ALL_STATES)}


def test_an_action_a_crash_cut_short_is_taken_by_the_next_sweep(
    tmp_path: Path, inbox: Path, store: state.Store
) -> None:
    _, files = deleting_after(0, tmp_path, inbox, store)
    audio = inbox / "call.ogg"
    audio.write_bytes(b"OggS audio")
    found = audio.stat()
    row_id = store.add_version(path=str(audio), folder=str(inbox), size=found.st_size,
                               mtime_ns=found.st_mtime_ns, now=NOW)  # fmt: skip
    (inbox / "call.txt").write_text("transcript")
    (inbox / "call.json").write_text("{}")
    row = store.get(row_id)
    done = lifecycle.finished(NOW, 1, hook=False, retain_at=files.care.due_at(row, State.DONE, NOW))
    assert store.apply(row, done, NOW)  # the end is recorded; the daemon dies before acting
    assert audio.exists()
    files.care.sweep_retention()  # at the next start
    assert not audio.exists()
    assert (inbox / "call.json").exists()


def retry_now(store: state.Store, audio: Path, now: float) -> None:
    """What `retry PATH` does, from its own process, on the same state file."""
    other = state.Store(store.path)
    try:
        assert other.requeue(paths=[str(audio)], now=now, specification=lambda row: "{}") == 1
    finally:
        other.close()


@pytest.mark.parametrize("action", ["delete", "move"])
@pytest.mark.parametrize("when", ["before the last look", "during the action"])
def test_a_failed_file_retried_while_its_audio_is_due_keeps_its_place_in_the_queue(
    action: str, when: str, tmp_path: Path, inbox: Path, store: state.Store,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    clock = Clock()
    failed_dir = tmp_path / "failed"
    files = Files(settings(tmp_path, {
        "path": str(inbox), "after_failed": action, "after_failed_days": 1,
        "failed_move_to": str(failed_dir),
    }), store, clock)  # fmt: skip
    audio = inbox / "bad.ogg"
    row = files.finish(audio, State.FAILED)
    clock.now = NOW + 2 * DAY_SECONDS
    retried_at = clock.now - 1
    if when == "before the last look":
        # `retry` lands after the sweep read the row, before the audio goes.
        products = files.care._products

        def retried_then_products(found: state.FileRow) -> list[Path]:
            retry_now(store, audio, retried_at)
            return products(found)

        monkeypatch.setattr(files.care, "_products", retried_then_products)
    # `retry` lands after the last look, while the audio is being deleted or moved.
    elif action == "delete":
        unlink = Path.unlink

        def retried_then_unlink(path: Path, missing_ok: bool = False) -> None:
            if path == audio:
                retry_now(store, audio, retried_at)
            unlink(path, missing_ok=missing_ok)

        monkeypatch.setattr(Path, "unlink", retried_then_unlink)
    else:
        move = files.care._move

        def retried_then_move(found: state.FileRow, folder: config.WatchFolder) -> Path:
            retry_now(store, audio, retried_at)
            return move(found, folder)

        monkeypatch.setattr(files.care, "_move", retried_then_move)
    files.care.sweep_retention()
    queued = store.get(row.id)
    assert queued.state == State.QUEUED
    assert queued.due_at == retried_at  # `due()` picks it up: it is not stranded
    assert queued.moved_to is None
    assert store.retention_pending() == (0, None)
    if when == "before the last look":
        assert audio.exists()  # the queued file's audio is left alone


def test_rows_waiting_for_a_rule_that_became_keep_or_a_folder_that_left_stop_waiting(
    tmp_path: Path, inbox: Path, store: state.Store, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    other = tmp_path / "other"
    other.mkdir()
    deleting = {"path": str(inbox), "after_done": "delete", "after_done_days": 30}
    failing = {"path": str(other), "after_done": "delete", "after_done_days": 30,
               "after_failed": "delete", "after_failed_days": 30}  # fmt: skip
    files = Files(settings(tmp_path, deleting, failing), store, clock)
    kept = files.finish(inbox / "call.ogg")
    gone = files.finish(other / "call.ogg")
    still = files.finish(other / "bad.ogg", State.FAILED)
    assert store.retention_pending()[0] == 3
    # A reload: the inbox keeps its audio now; `other` keeps transcribed files' audio only.
    files.care.config = settings(tmp_path, {"path": str(inbox)}, {**failing, "after_done": "keep"})
    with caplog.at_level(logging.INFO, logger="daemon.aftercare"):
        files.care.sweep_retention()
    assert store.get(kept.id).due_at is None
    assert store.get(gone.id).due_at is None
    assert store.get(still.id).due_at == NOW + 30 * DAY_SECONDS  # its rule still acts
    assert "the audio of 2 finished file(s) is kept" in caplog.text
    # A folder that left the config: its rows stop waiting too, and pruning may forget them.
    files.care.config = settings(tmp_path, {"path": str(inbox)})
    files.care.sweep_retention()
    assert store.retention_pending() == (0, None)
    for leftover in [*inbox.iterdir(), *other.iterdir()]:
        leftover.unlink()
    clock.now = NOW + 91 * DAY_SECONDS
    assert files.care.prune_state(clock.now) == 3
