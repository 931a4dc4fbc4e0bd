"""The watcher on a real folder with real inotify events, and the scan."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from daemon import watching
from daemon.config import WatchFolder

WAIT_SECONDS = 10.0


def collect(watcher: watching.Watcher, until: set[tuple[str, str]]) -> list[watching.Hint]:
    """Hints until every (file name, kind) in `until` has come, then a short settle for strays.

    Waiting for named hints, not a count: watchdog holds a rename's events back for up to half
    a second to pair them, so a count could be reached before a moved file's hint arrives.
    """
    hints: list[watching.Hint] = []
    deadline = time.monotonic() + WAIT_SECONDS
    while not until <= seen(hints) and time.monotonic() < deadline:
        watcher.wake.wait(0.1)
        watcher.wake.clear()
        hints.extend(watcher.drain())
    time.sleep(0.2)
    hints.extend(watcher.drain())
    return hints


def seen(hints: list[watching.Hint]) -> set[tuple[str, str]]:
    return {(Path(hint.path).name, hint.kind) for hint in hints}


def test_events_give_writing_then_closed_and_moves_count_as_closed(tmp_path: Path) -> None:
    folder = WatchFolder(path=tmp_path)
    watcher = watching.Watcher([folder], watching.Waker())
    watcher.start()
    try:
        with (tmp_path / "a.ogg").open("wb") as stream:
            stream.write(b"x")
        (tmp_path / "b.ogg.part").write_bytes(b"y")
        os.rename(tmp_path / "b.ogg.part", tmp_path / "B.OGG")
        (tmp_path / "notes.txt").write_text("not audio")
        (tmp_path / ".hidden.ogg").write_bytes(b"z")
        hints = collect(watcher, until={("a.ogg", watching.CLOSED), ("B.OGG", watching.CLOSED)})
    finally:
        watcher.stop()
    by_path: dict[str, list[str]] = {}
    for hint in hints:
        by_path.setdefault(Path(hint.path).name, []).append(hint.kind)
    assert set(by_path) == {"a.ogg", "B.OGG"}
    assert by_path["a.ogg"][0] == watching.CREATED
    assert watching.WRITING in by_path["a.ogg"]
    assert by_path["a.ogg"][-1] == watching.CLOSED
    assert by_path["B.OGG"] == [watching.CLOSED]
    assert not watcher.observers


def test_a_file_moved_in_from_outside_counts_as_closed(tmp_path: Path) -> None:
    inbox, outside = tmp_path / "in", tmp_path / "out"
    inbox.mkdir()
    outside.mkdir()
    (outside / "call.ogg").write_bytes(b"data")
    watcher = watching.Watcher([WatchFolder(path=inbox)], watching.Waker())
    watcher.start()
    try:
        os.rename(outside / "call.ogg", inbox / "call.ogg")
        hints = collect(watcher, until={("call.ogg", watching.CLOSED)})
    finally:
        watcher.stop()
    assert [(Path(hint.path).name, hint.kind) for hint in hints] == [("call.ogg", watching.CLOSED)]


def test_scan_finds_audio_recursively_but_not_outputs_or_escaping_links(tmp_path: Path) -> None:
    inbox = tmp_path / "in"
    (inbox / "sub").mkdir(parents=True)
    (inbox / "out").mkdir()
    (inbox / ".cache").mkdir()
    for name in ("top.ogg", "sub/deep.OPUS", "out/result.ogg", ".cache/x.ogg", "top.txt"):
        (inbox / name).write_bytes(b"x")
    secret = tmp_path / "elsewhere.ogg"
    secret.write_bytes(b"x")
    (inbox / "escape.ogg").symlink_to(secret)
    (inbox / "inside.ogg").symlink_to(inbox / "top.ogg")
    folder = WatchFolder(path=inbox, recursive=True, output_dir=inbox / "out")
    found = sorted(Path(path).relative_to(inbox).as_posix() for path in watching.scan(folder))
    assert found == ["inside.ogg", "sub/deep.OPUS", "top.ogg"]
    flat = sorted(Path(p).name for p in watching.scan(WatchFolder(path=inbox)))
    assert flat == ["inside.ogg", "top.ogg"]
    assert watching.stat_regular(str(inbox / "escape.ogg"), str(inbox)) is None
    assert watching.stat_regular(str(inbox / "inside.ogg"), str(inbox)) is not None


def refresh_until(watcher: watching.Watcher, wanted: int) -> list[WatchFolder]:
    """Refresh (as the main loop does) until `wanted` folders were watched anew."""
    renewed: list[WatchFolder] = []
    now = watcher.next_refresh  # the injected clock: every call is due
    deadline = time.monotonic() + WAIT_SECONDS
    while len(renewed) < wanted and time.monotonic() < deadline:
        renewed += watcher.refresh(now)
        now += watching.FOLDER_CHECK_SECONDS
        time.sleep(0.05)
    return renewed


def test_a_folder_deleted_and_created_again_is_watched_again(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    folder = WatchFolder(path=inbox)
    watcher = watching.Watcher([folder], watching.Waker())
    watcher.start()
    try:
        os.rmdir(inbox)
        inbox.mkdir()  # ext4 hands out the same inode number again at once
        assert refresh_until(watcher, 1) == [folder]
        assert watcher.alive()
        (inbox / "a.ogg").write_bytes(b"x")
        hints = collect(watcher, until={("a.ogg", watching.CLOSED)})
    finally:
        watcher.stop()
    assert watching.CLOSED in [hint.kind for hint in hints if Path(hint.path).name == "a.ogg"]


def test_a_folder_moved_away_is_let_go_and_its_successor_watched(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    folder = WatchFolder(path=inbox)
    watcher = watching.Watcher([folder], watching.Waker())
    watcher.start()
    try:
        os.rename(inbox, tmp_path / "old")
        assert watcher.alive()  # a folder gone is not a dead observer
        assert watcher.refresh(watcher.next_refresh) == []
        assert watcher.missing() == [folder]
        assert not watcher.observers
        (tmp_path / "old" / "stale.ogg").write_bytes(b"x")  # the old folder: no longer ours
        inbox.mkdir()
        assert refresh_until(watcher, 1) == [folder]
        (inbox / "new.ogg").write_bytes(b"x")
        hints = collect(watcher, until={("new.ogg", watching.CLOSED)})
    finally:
        watcher.stop()
    assert {Path(hint.path).name for hint in hints} == {"new.ogg"}


def test_a_missing_folder_is_waited_for_and_a_reload_keeps_waiting(tmp_path: Path) -> None:
    present, late = tmp_path / "present", tmp_path / "late"
    present.mkdir()
    watcher = watching.Watcher([WatchFolder(path=present)], watching.Waker())
    watcher.start()
    try:
        added, removed = watcher.reschedule([WatchFolder(path=present), WatchFolder(path=late)])
        assert (added, removed) == ([WatchFolder(path=late)], [])
        assert watcher.missing() == [WatchFolder(path=late)]
        assert len(watcher.observers) == 1
        assert watcher.alive()
        late.mkdir()
        assert refresh_until(watcher, 1) == [WatchFolder(path=late)]
        assert watcher.missing() == []
        (late / "call.ogg").write_bytes(b"x")
        hints = collect(watcher, until={("call.ogg", watching.CLOSED)})
    finally:
        watcher.stop()
    assert {Path(hint.path).name for hint in hints} == {"call.ogg"}
    assert not watcher.observers


def test_a_polled_folder_reports_new_names_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "old.ogg").write_bytes(b"there before: the start-up scan finds it")
    (tmp_path / "sub").mkdir()
    monkeypatch.setattr(watching, "POLLING_INTERVAL_SECONDS", 0.05)
    watcher = watching.Watcher(
        [WatchFolder(path=tmp_path, polling=True, recursive=True)], watching.Waker()
    )
    watcher.start()
    try:
        time.sleep(0.2)  # the first listing is taken
        (tmp_path / "new.ogg.part").write_bytes(b"x")
        os.rename(tmp_path / "new.ogg.part", tmp_path / "new.ogg")
        (tmp_path / "sub" / "deep.ogg").write_bytes(b"y")
        (tmp_path / "old.ogg").write_bytes(b"rewritten: left to the rescan")
        hints = collect(
            watcher, until={("deep.ogg", watching.CREATED), ("new.ogg", watching.CREATED)}
        )
    finally:
        watcher.stop()
    assert sorted(Path(hint.path).name for hint in hints) == ["deep.ogg", "new.ogg"]
    assert {hint.kind for hint in hints} == {watching.CREATED}
