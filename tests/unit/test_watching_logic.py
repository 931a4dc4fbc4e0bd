"""Which names count as audio and when a file counts as completely written."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon import layout, watching
from daemon.config import WatchFolder

FOLDER = WatchFolder(path=Path("/in"))
PATTERNS = ("*.ogg", "*.opus")


@pytest.mark.parametrize(
    "name", ["call.ogg", "CALL.OGG", "Voice Note.Opus", "-dash.ogg", "звонок.ogg"]
)
def test_audio_names_match_case_insensitively(name: str) -> None:
    assert watching.matches(name, PATTERNS)


@pytest.mark.parametrize(
    "name",
    [".hidden.ogg", "call.ogg.part", "call.ogg.tmp", "x.ogg.crdownload", "~lock.ogg",
     ".syncthing.call.ogg.tmp", ".call.txt.1a2b.skw-tmp", "call.txt", "call.json", "call.wav"],
)  # fmt: skip
def test_temporary_hidden_and_other_names_do_not(name: str) -> None:
    assert not watching.matches(name, PATTERNS)


def test_inside_does_not_confuse_sibling_prefixes() -> None:
    assert watching.inside("/in/a.ogg", "/in")
    assert not watching.inside("/inbox/a.ogg", "/in")


def test_a_closed_file_settles_after_the_quiet_time() -> None:
    settler = watching.Settler(settle_seconds=2.0)
    settler.note("/in/a.ogg", watching.CLOSED, FOLDER, size=10, mtime_ns=1, now=100.0)
    assert not settler.observe("/in/a.ogg", 10, 1, 101.0)
    assert settler.observe("/in/a.ogg", 10, 1, 102.0)


def test_any_change_restarts_the_quiet_time() -> None:
    settler = watching.Settler(settle_seconds=2.0)
    settler.note("/in/a.ogg", watching.SEEN, FOLDER, size=10, mtime_ns=1, now=100.0)
    assert not settler.observe("/in/a.ogg", 20, 2, 101.5)  # grew
    assert not settler.observe("/in/a.ogg", 20, 3, 103.0)  # touched
    assert not settler.observe("/in/a.ogg", 20, 3, 104.9)
    assert settler.observe("/in/a.ogg", 20, 3, 105.0)


def test_a_file_still_open_for_writing_waits_for_its_close() -> None:
    settler = watching.Settler(settle_seconds=1.0, grace_seconds=60.0)
    settler.note("/in/a.ogg", watching.WRITING, FOLDER, size=10, mtime_ns=1, now=0.0)
    # A slow writer pauses for 5 s: still open, so not complete although nothing changed.
    assert not settler.observe("/in/a.ogg", 10, 1, 5.0)
    settler.note("/in/a.ogg", watching.CLOSED, FOLDER, size=30, mtime_ns=2, now=6.0)
    assert not settler.observe("/in/a.ogg", 30, 2, 6.5)
    assert settler.observe("/in/a.ogg", 30, 2, 7.0)


def test_a_new_empty_file_waits_for_its_writer_but_a_new_link_does_not() -> None:
    settler = watching.Settler(settle_seconds=1.0, grace_seconds=60.0)
    settler.note("/in/new.ogg", watching.CREATED, FOLDER, size=0, mtime_ns=1, now=0.0)
    assert not settler.observe("/in/new.ogg", 0, 1, 5.0)
    settler.note("/in/link.ogg", watching.CREATED, FOLDER, size=900, mtime_ns=1, now=0.0)
    assert settler.observe("/in/link.ogg", 900, 1, 1.0)


def test_a_lost_close_event_is_covered_by_the_grace_time() -> None:
    settler = watching.Settler(settle_seconds=1.0, grace_seconds=60.0)
    settler.note("/in/a.ogg", watching.WRITING, FOLDER, size=10, mtime_ns=1, now=0.0)
    assert not settler.observe("/in/a.ogg", 10, 1, 59.0)
    assert settler.observe("/in/a.ogg", 10, 1, 60.0)


def test_output_dir_keeps_the_subfolder_structure() -> None:
    folder = WatchFolder(path=Path("/in"), recursive=True, output_dir=Path("/out"))
    assert layout.relative_output_dir(Path("/in/a/b/c.ogg"), folder) == Path("/out/a/b")
    assert layout.relative_output_dir(Path("/in/c.ogg"), WatchFolder(path=Path("/in"))) == Path(
        "/in"
    )


def test_folder_for_picks_the_deepest_watched_folder() -> None:
    outer, inner = WatchFolder(path=Path("/in")), WatchFolder(path=Path("/in/sub"))
    assert layout.folder_for("/in/sub/a.ogg", [outer, inner]) is inner
    assert layout.folder_for("/in/a.ogg", [outer, inner]) is outer
    with pytest.raises(ValueError, match="not inside a watched folder"):
        layout.folder_for("/elsewhere/a.ogg", [outer, inner])


FOLDER_A = (64769, 1001)  # (st_dev, st_ino)
FOLDER_B = (64769, 2002)


@pytest.mark.parametrize(
    ("watched", "current", "watch_ended", "expected"),
    [
        (FOLDER_A, FOLDER_A, False, watching.UNCHANGED),  # the folder we watch, watched
        (FOLDER_A, None, False, watching.GONE),  # deleted, moved away or unmounted
        (FOLDER_A, None, True, watching.GONE),  # deleted: watchdog ended the watch too
        (None, None, False, watching.UNCHANGED),  # still missing: nothing new to say
        (None, FOLDER_A, False, watching.APPEARED),  # missing at start (a late mount), now there
        (FOLDER_A, FOLDER_B, False, watching.REPLACED),  # moved away and a new one made
        (FOLDER_A, FOLDER_B, True, watching.REPLACED),  # deleted and created again
        # Deleted and created again between two looks, with the inode number reused (ext4
        # does this at once): only the ended watch tells.
        (FOLDER_A, FOLDER_A, True, watching.ENDED),
    ],
)
def test_folder_change_tells_what_became_of_a_watched_folder(
    watched: watching.Identity | None,
    current: watching.Identity | None,
    watch_ended: bool,
    expected: str,
) -> None:
    assert watching.folder_change(watched, current, watch_ended=watch_ended) == expected


def test_folder_identity_is_none_for_a_missing_path_or_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    assert watching.folder_identity(tmp_path / "missing") is None
    assert watching.folder_identity(tmp_path / "file") is None
    found = tmp_path.stat()
    assert watching.folder_identity(tmp_path) == (found.st_dev, found.st_ino)


def test_a_settling_file_is_looked_at_once_per_poll_and_when_it_may_be_complete() -> None:
    settler = watching.Settler(settle_seconds=2.0)  # poll: a quarter of it
    settler.note("/in/a.ogg", watching.SEEN, FOLDER, size=5, mtime_ns=1, now=10.0)
    observation = settler.candidates["/in/a.ogg"]
    assert not settler.worth_a_look(observation, 10.1)  # just stat'ed when noted
    assert settler.worth_a_look(observation, 10.5)
    settler.observe("/in/a.ogg", 5, 1, now=10.5)
    assert not settler.worth_a_look(observation, 10.9)
    assert settler.worth_a_look(observation, 11.0)
    settler.observe("/in/a.ogg", 5, 1, now=11.9)
    assert settler.worth_a_look(observation, 12.0)  # quiet long enough: may be complete now
    assert watching.settle_poll_seconds(0.0) == watching.MIN_SETTLE_POLL_SECONDS
    assert watching.settle_poll_seconds(60.0) == watching.MAX_SETTLE_POLL_SECONDS
