"""Finding audio files: watchdog observers, the periodic scan, and deciding when a file is complete.

Filesystem events are hints: created, modified, closed and moved-in events all feed one queue;
a periodic scan is the safety net (inotify drops events when its queue overflows, and network
mounts send none). Completeness is decided from size and mtime staying still (`Settler`).
The watchdog handler only enqueues; any exception in it would kill the observer thread.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import queue
import stat
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from watchdog.events import (
    FileClosedEvent,
    FileCreatedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from daemon import config as config_module

log = logging.getLogger(__name__)

# A created/modified file normally gets a close event; if none comes (events lost, or a file
# created inside a folder that was moved in), it is judged by stillness alone after this long.
OPEN_WRITER_GRACE_SECONDS = 60.0
POLLING_INTERVAL_SECONDS = 2.0  # polling observers (network mounts) look this often

TEMPORARY_SUFFIXES = (".part", ".tmp", ".crdownload", ".partial", ".download", ".swp")
TEMPORARY_PREFIXES = (".", "~", "#")
OWN_TEMP_SUFFIX = ".skw-tmp"  # our own atomic-write temp files (hidden too)

# Event kinds put on the queue.
WRITING = "writing"  # modified: someone is writing
CREATED = "created"  # a new name: being written if empty, else a link or a finished copy
CLOSED = "closed"  # closed after writing, or renamed into place: the writer is done
SEEN = "seen"  # found by a scan: judged by stillness alone


class Waker:
    """Wakes the main loop. Like threading.Event, but `set` is safe inside a signal handler:
    SimpleQueue.put is reentrant, while Event.set takes a lock the interrupted main thread may
    already hold (a deadlock)."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[None] = queue.SimpleQueue()

    def set(self) -> None:
        self._queue.put(None)

    def clear(self) -> None:
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                return

    def wait(self, timeout: float) -> bool:
        """Block until set or `timeout` seconds pass; True if it was set."""
        try:
            self._queue.get(timeout=max(0.0, timeout))
        except queue.Empty:
            return False
        self._queue.put(None)  # stay set until cleared, as an Event does
        return True


def is_ignored_name(name: str) -> bool:
    """Hidden, temporary and partial-download names never count as audio."""
    lowered = name.lower()
    if lowered.startswith(TEMPORARY_PREFIXES) or lowered.startswith(".syncthing."):
        return True
    return lowered.endswith(TEMPORARY_SUFFIXES) or lowered.endswith(OWN_TEMP_SUFFIX)


def matches(name: str, patterns: Sequence[str]) -> bool:
    """True if the file name is audio we watch for: any pattern, case-insensitively."""
    if is_ignored_name(name):
        return False
    lowered = name.lower()
    return any(fnmatch.fnmatchcase(lowered, pattern.lower()) for pattern in patterns)


def inside(path: str, folder: str) -> bool:
    """True if `path` is `folder` or below it (both already resolved)."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


@dataclass
class Observation:
    """What we know about one candidate file while it settles."""

    folder: config_module.WatchFolder
    size: int
    mtime_ns: int
    changed_at: float  # monotonic time the size/mtime last changed (or first seen)
    awaiting_close: bool


class Settler:
    """Candidates waiting to be complete. Pure decisions over injected stat results and times."""

    def __init__(self, settle_seconds: float, grace_seconds: float = OPEN_WRITER_GRACE_SECONDS):
        self.settle_seconds = settle_seconds
        self.grace_seconds = max(grace_seconds, settle_seconds)
        self.candidates: dict[str, Observation] = {}

    def __len__(self) -> int:
        return len(self.candidates)

    def note(
        self,
        path: str,
        kind: str,
        folder: config_module.WatchFolder,
        *,
        size: int,
        mtime_ns: int,
        now: float,
    ) -> None:
        """Record a hint about `path` with its current size and mtime."""
        # An empty new file is about to be written; a new name with content is a link, a
        # hard link or a copy already written (no close event will come for those).
        writing = kind == WRITING or (kind == CREATED and size == 0)
        current = self.candidates.get(path)
        if current is None:
            self.candidates[path] = Observation(folder, size, mtime_ns, now, writing)
            return
        if (size, mtime_ns) != (current.size, current.mtime_ns):
            current.size, current.mtime_ns, current.changed_at = size, mtime_ns, now
        if writing:
            current.awaiting_close = True
        elif kind == CLOSED:
            current.awaiting_close = False

    def forget(self, path: str) -> None:
        self.candidates.pop(path, None)

    def observe(self, path: str, size: int, mtime_ns: int, now: float) -> bool:
        """Compare a fresh stat with the last one; True if the file now counts as complete."""
        current = self.candidates[path]
        if (size, mtime_ns) != (current.size, current.mtime_ns):
            current.size, current.mtime_ns, current.changed_at = size, mtime_ns, now
            return False
        quiet = now - current.changed_at
        if current.awaiting_close:
            return quiet >= self.grace_seconds
        return quiet >= self.settle_seconds


def stat_regular(path: str, folder_root: str) -> os.stat_result | None:
    """Stat a candidate: a regular file, or a symlink resolving inside the watched folder."""
    try:
        link = os.lstat(path)
        if stat.S_ISLNK(link.st_mode):
            target = os.path.realpath(path)
            if not inside(target, os.path.realpath(folder_root)):
                return None
        result = os.stat(path)
    except OSError:
        return None
    return result if stat.S_ISREG(result.st_mode) else None


def excluded(path: str, folder: config_module.WatchFolder) -> bool:
    """True inside the folder's own output or move_to folder: our files never trigger work."""
    real = os.path.realpath(path)
    return any(
        own is not None and inside(real, os.path.realpath(own))
        for own in (folder.output_dir, folder.move_to)
    )


def _descend(entry: os.DirEntry[str], folder: config_module.WatchFolder) -> bool:
    """Subfolders are scanned unless hidden or our own output/move_to folder (no loops)."""
    return not is_ignored_name(entry.name) and not excluded(entry.path, folder)


def scan(folder: config_module.WatchFolder) -> Iterator[str]:
    """Every matching file in a watched folder (and its subfolders when recursive)."""
    root = str(folder.path)
    real_root = os.path.realpath(root)
    stack = [root]
    while stack:
        directory = stack.pop()
        try:
            entries = list(os.scandir(directory))
        except OSError as error:
            log.warning("cannot list folder %s: %s", directory, error.strerror)
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    if folder.recursive and _descend(entry, folder):
                        stack.append(entry.path)
                    continue
                if not matches(entry.name, folder.patterns):
                    continue
                if entry.is_symlink() and not inside(os.path.realpath(entry.path), real_root):
                    continue
            except OSError:
                continue
            yield entry.path


class _Handler(FileSystemEventHandler):
    """Turns watchdog events into (kind, path, folder) hints. Never raises."""

    def __init__(
        self,
        folder: config_module.WatchFolder,
        hints: queue.SimpleQueue[Hint],
        wake: Waker,
    ) -> None:
        self.folder = folder
        self.hints = hints
        self.wake = wake

    def on_any_event(self, event: FileSystemEvent) -> None:
        try:
            if event.is_directory:
                return
            if isinstance(event, FileMovedEvent):
                self._hint(CLOSED, os.fsdecode(event.dest_path))
            elif isinstance(event, FileClosedEvent):
                self._hint(CLOSED, os.fsdecode(event.src_path))
            elif isinstance(event, FileCreatedEvent):
                self._hint(CREATED, os.fsdecode(event.src_path))
            elif isinstance(event, FileModifiedEvent):
                self._hint(WRITING, os.fsdecode(event.src_path))
        except Exception:
            log.exception("ignoring a filesystem event that could not be handled")

    def _hint(self, kind: str, path: str) -> None:
        if (
            path
            and matches(os.path.basename(path), self.folder.patterns)
            and not excluded(path, self.folder)
        ):
            self.hints.put(Hint(kind, path, self.folder))
            self.wake.set()


@dataclass(frozen=True)
class Hint:
    kind: str
    path: str
    folder: config_module.WatchFolder


def _inotify_observer() -> BaseObserver:
    if sys.platform.startswith("linux"):
        from watchdog.observers.inotify import InotifyObserver  # noqa: PLC0415 - Linux only

        # Full events: a file moved in from outside arrives as a move (complete), not a create.
        return InotifyObserver(generate_full_events=True)
    from watchdog.observers import Observer  # noqa: PLC0415

    observer: BaseObserver = Observer()
    return observer


class Watcher:
    """The observers of every watched folder, feeding one queue of hints."""

    def __init__(self, folders: Sequence[config_module.WatchFolder], wake: Waker):
        self.wake = wake  # set on every hint so the main loop reacts at once
        self.hints: queue.SimpleQueue[Hint] = queue.SimpleQueue()
        self.observers: list[BaseObserver] = []
        self.folders = tuple(folders)

    def start(self) -> None:
        for folder in self.folders:
            self.observers.append(self._observe(folder))

    def _observe(self, folder: config_module.WatchFolder) -> BaseObserver:
        event_filter = [FileCreatedEvent, FileModifiedEvent, FileClosedEvent, FileMovedEvent]
        if folder.polling:
            observer: BaseObserver = PollingObserver(timeout=POLLING_INTERVAL_SECONDS)
        else:
            observer = _inotify_observer()
        observer.schedule(
            _Handler(folder, self.hints, self.wake),
            str(folder.path),
            recursive=folder.recursive,
            event_filter=event_filter,
        )
        observer.daemon = True
        observer.start()
        return observer

    def reschedule(
        self, folders: Sequence[config_module.WatchFolder]
    ) -> tuple[list[config_module.WatchFolder], list[config_module.WatchFolder]]:
        """Watch exactly `folders` from now on (a config reload); returns (added, removed).

        A folder whose settings changed is removed and added again: its handler carries them.
        New observers start before old ones stop, so if one cannot start (OSError, e.g. the
        inotify watch limit) nothing has changed and the error propagates.
        """
        wanted = tuple(folders)
        added = [folder for folder in wanted if folder not in self.folders]
        started: list[BaseObserver] = []
        try:
            for folder in added:
                started.append(self._observe(folder))
        except BaseException:
            _stop_all(started)
            raise
        # Folders are compared by value (all their settings), not hashed: a pair list suffices.
        current = list(zip(self.folders, self.observers, strict=True))
        removed = [folder for folder, _ in current if folder not in wanted]
        _stop_all([observer for folder, observer in current if folder not in wanted])
        pairs = [pair for pair in current if pair[0] in wanted]
        pairs += zip(added, started, strict=True)
        self.folders = wanted
        self.observers = [
            next(observer for known, observer in pairs if known == folder) for folder in wanted
        ]
        return added, removed

    def alive(self) -> bool:
        return all(observer.is_alive() for observer in self.observers)

    def stop(self) -> None:
        _stop_all(self.observers)
        self.observers.clear()

    def drain(self, limit: int = 10_000) -> list[Hint]:
        hints: list[Hint] = []
        while len(hints) < limit:
            try:
                hints.append(self.hints.get_nowait())
            except queue.Empty:
                break
        return hints


def _stop_all(observers: Sequence[BaseObserver]) -> None:
    for observer in observers:
        observer.stop()
    for observer in observers:
        observer.join(timeout=5)


def folder_for(
    path: str, folders: Sequence[config_module.WatchFolder]
) -> config_module.WatchFolder:
    """The watched folder a path belongs to (the deepest one containing it)."""
    best: config_module.WatchFolder | None = None
    for folder in folders:
        if inside(path, str(folder.path)) and (
            best is None or len(str(folder.path)) > len(str(best.path))
        ):
            best = folder
    if best is None:
        raise ValueError(f"{path} is not inside a watched folder")
    return best


def relative_output_dir(audio_path: Path, folder: config_module.WatchFolder) -> Path:
    """Where the outputs of `audio_path` go: beside it, or under `output_dir` keeping subfolders."""
    if folder.output_dir is None:
        return audio_path.parent
    try:
        relative = audio_path.parent.relative_to(folder.path)
    except ValueError:
        relative = Path()
    return folder.output_dir / relative
