"""The inotify limits: a folder that cannot be watched is polled instead, and `check` compares
the limits with what the config needs. The limit is simulated at the watch call (the test hook
of `daemon.crashpoints`), or reported the way watchdog reports a subfolder it could not watch."""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

import pytest

from daemon import checks, crashpoints, inotify_limits, watching
from daemon.config import WatchFolder
from tests.unit.test_config import minimal, parse


def test_a_folder_beyond_the_watch_limit_is_polled_with_one_line_naming_the_sysctl(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    monkeypatch.setenv(crashpoints.WATCH_LIMIT_VARIABLE, "ENOSPC")
    watcher = watching.Watcher([WatchFolder(path=tmp_path, recursive=True)], watching.Waker())
    with caplog.at_level(logging.WARNING, logger="daemon.watching"):
        watcher.start()
    try:
        assert [type(observer) for observer in watcher.observers] == [watching.NamePollingObserver]
        assert watcher.alive()
        assert watcher.refresh(1e9) == []  # polled for good: no renewal every refresh
    finally:
        watcher.stop()
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 1
    assert f'cannot watch folder "{tmp_path}" with inotify (fs.inotify.max_user_watches' in lines[0]
    assert "polling it every 2 s instead" in lines[0]
    assert "this config needs 3)" in lines[0]  # the folder and its two subfolders


def test_the_instance_limit_names_its_own_sysctl(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(crashpoints.WATCH_LIMIT_VARIABLE, "EMFILE")
    watcher = watching.Watcher([WatchFolder(path=tmp_path)], watching.Waker())
    watcher.start()
    watcher.stop()
    assert "(fs.inotify.max_user_instances: inotify instance limit reached)" in caplog.text


def test_a_subfolder_watchdog_could_not_watch_later_makes_the_folder_polled(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = WatchFolder(path=tmp_path, recursive=True)
    watcher = watching.Watcher([folder], watching.Waker())
    watcher.start()
    try:
        assert not isinstance(watcher.observers[0], watching.NamePollingObserver)
        sub = tmp_path / "new"
        sub.mkdir()
        # What watchdog's inotify emitter logs when the limit is reached as the tree grows.
        logging.getLogger("watchdog.observers.inotify").warning(
            "Unable to watch %r: %s", os.fsencode(sub),
            OSError(errno.ENOSPC, "inotify watch limit reached"),
        )  # fmt: skip
        assert watcher.refresh(1e9) == [folder]  # the caller scans it now
        assert [type(observer) for observer in watcher.observers] == [watching.NamePollingObserver]
    finally:
        watcher.stop()
    assert f'cannot watch folder "{tmp_path}" with inotify' in caplog.text


def write_limits(proc_sys: Path, watches: int, instances: int, namespace: int = 0) -> Path:
    """A /proc/sys with the inotify limits (and the user namespace's watch limit, if given)."""
    (proc_sys / "fs" / "inotify").mkdir(parents=True)
    (proc_sys / "fs" / "inotify" / "max_user_watches").write_text(f"{watches}\n")
    (proc_sys / "fs" / "inotify" / "max_user_instances").write_text(f"{instances}\n")
    if namespace:
        (proc_sys / "user").mkdir()
        (proc_sys / "user" / "max_inotify_watches").write_text(f"{namespace}\n")
    return proc_sys


def test_check_reports_the_limits_against_the_folders_the_config_watches(tmp_path: Path) -> None:
    tree, flat, polled = tmp_path / "tree", tmp_path / "flat", tmp_path / "polled"
    for sub in ("a/b", "c", ".hidden"):
        (tree / sub).mkdir(parents=True)
    flat.mkdir()
    (flat / "sub").mkdir()  # not recursive: one watch
    polled.mkdir()
    settings = parse(minimal(watch=[
        {"path": str(tree), "recursive": True}, {"path": str(flat)},
        {"path": str(polled), "polling": True, "recursive": True},
    ]))  # fmt: skip
    roomy = write_limits(tmp_path / "roomy", 8192, 128)
    found = checks.check_inotify(settings, roomy)
    assert [(result.status, result.message) for result in found] == [
        ("ok", "inotify watches: this config needs 6, fs.inotify.max_user_watches is 8192"),
        ("ok", "inotify instances: this config needs 2, fs.inotify.max_user_instances is 128"),
    ]  # fmt: skip
    tight = write_limits(tmp_path / "tight", 5, 2)
    watches, instances = checks.check_inotify(settings, tight)
    assert watches.status == checks.WARNING
    assert watches.passed  # polling works: a warning, not a problem
    assert "needs 6, fs.inotify.max_user_watches is 5; the folders beyond it are polled" in (
        watches.message
    )
    assert "sysctl -w fs.inotify.max_user_watches=8192" in watches.message
    assert instances.status == checks.WARNING  # 2 of 2: nothing left for other programs
    contained = write_limits(tmp_path / "container", 8192, 128, namespace=4)
    watches, _ = checks.check_inotify(settings, contained)
    assert "needs 6, fs.inotify.max_user_watches is 4;" in watches.message  # the lower applies
    assert [result.status for result in checks.check_inotify(settings, tmp_path / "none")] == [
        "skip", "skip",
    ]  # fmt: skip


def test_the_watches_needed_count_every_folder_inotify_would_watch(tmp_path: Path) -> None:
    for sub in ("a/b/c", "d", ".git/objects"):
        (tmp_path / sub).mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "a")  # not followed
    assert inotify_limits.count_folders(tmp_path, recursive=True) == 7
    assert inotify_limits.count_folders(tmp_path, recursive=False) == 1
    assert inotify_limits.needed_watches([(tmp_path / "missing", True)]) == 0
