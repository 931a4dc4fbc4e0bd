"""Finding audio files: watchdog observers, the periodic scan, and deciding when a file is complete.

Filesystem events are hints: created, modified, closed and moved-in events all feed one queue;
a periodic scan is the safety net (inotify drops events when its queue overflows, and network
mounts send none). Completeness is decided from size and mtime staying still (`Settler`).
The watchdog handler only enqueues; any exception in it would kill the observer thread.
Watched folders may come and go (deleted, moved, a late or lost mount): `Watcher.refresh` notices
with one stat per folder, and watches a folder again once it is back.
"""

from __future__ import annotations

import fnmatch
import functools
import logging
import os
import queue
import re
import stat
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from watchdog.events import (
    DirDeletedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers.api import BaseObserver, EventEmitter, EventQueue, ObservedWatch

from daemon import config as config_module
from daemon import crashpoints, inotify_limits
from daemon.layout import OWN_TEMP_SUFFIX, inside
from daemon.logs import shown

log = logging.getLogger(__name__)

# A created/modified file normally gets a close event; if none comes (events lost, or a file
# created inside a folder that was moved in), it is judged by stillness alone after this long.
OPEN_WRITER_GRACE_SECONDS = 60.0
POLLING_INTERVAL_SECONDS = 2.0  # polling observers (network mounts) look this often
# A deleted, moved or unmounted folder silently ends its inotify watch; one stat per folder this
# often notices it (and its return) long before the next rescan, for next to no cost.
FOLDER_CHECK_SECONDS = 2.0

# Names of files still being written by common tools: browsers (.crdownload Chrome, .partial
# Firefox, .download Safari, .part), WinSCP (.filepart), uTorrent (.!ut), qBittorrent (.!qb),
# editors (.swp, `#name#`, `~name`), LibreOffice locks (`.~lock.name#`, hidden like every `.name`).
TEMPORARY_SUFFIXES = (
    ".part", ".tmp", ".crdownload", ".partial", ".download", ".filepart", ".!ut", ".!qb", ".swp",
)  # fmt: skip
TEMPORARY_PREFIXES = (".", "~", "#")

# Event kinds put on the queue.
WRITING = "writing"  # modified: someone is writing
CREATED = "created"  # a new name: being written if empty, else a link or a finished copy
CLOSED = "closed"  # closed after writing, or renamed into place: the writer is done
SEEN = "seen"  # found by a scan: judged by stillness alone

# What became of a watched folder since its observer was scheduled (`folder_change`).
UNCHANGED = "unchanged"  # still the folder watched (or still missing): nothing to do
GONE = "gone"  # deleted, moved away or unmounted: stop watching, wait for it
APPEARED = "appeared"  # missing until now (at start, or gone before): watch it
REPLACED = "replaced"  # another folder under the same path (recreated, moved in, a mount): watch it
ENDED = "ended"  # the same folder, but its watch ended by itself (deleted, then recreated
# with the same inode number): watch it again

Identity = tuple[int, int]  # (st_dev, st_ino): which folder a path is, not just its name


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


def inside_ignored_folder(path: str, root: str) -> bool:
    """True for a file below a hidden or temporary subfolder of the watched folder (Safari's
    `name.download/` holds the file it downloads): the scan does not go there either."""
    relative = os.path.relpath(os.path.dirname(path), root)
    if relative in (os.curdir, "") or relative.startswith(os.pardir):
        return False
    return any(is_ignored_name(part) for part in relative.split(os.sep))


def matches(name: str, patterns: Sequence[str]) -> bool:
    """True if the file name is audio we watch for: any pattern, case-insensitively."""
    if is_ignored_name(name):
        return False
    return _pattern_matcher(tuple(patterns))(name.lower()) is not None


@functools.lru_cache(maxsize=16)
def _pattern_matcher(patterns: tuple[str, ...]) -> Callable[[str], re.Match[str] | None]:
    """One regular expression for all the patterns: a rescan tests every name in the folder,
    outputs too, and one match is far cheaper than a fnmatch call per pattern."""
    alternatives = "|".join(f"(?:{fnmatch.translate(pattern.lower())})" for pattern in patterns)
    return re.compile(alternatives or "(?!)").match


def folder_identity(path: str | os.PathLike[str]) -> Identity | None:
    """Which folder `path` is now; None if it is missing, not a folder, or cannot be looked at."""
    try:
        found = os.stat(path)
    except OSError:
        return None
    return (found.st_dev, found.st_ino) if stat.S_ISDIR(found.st_mode) else None


def folder_change(watched: Identity | None, current: Identity | None, *, watch_ended: bool) -> str:
    """What became of a folder: UNCHANGED, GONE, APPEARED, REPLACED or ENDED.

    `watched` is the folder's identity when its observer was scheduled (None: not watched, it
    was missing); `current` is the path's identity now; `watch_ended` says the observer's watch
    stopped by itself, which watchdog does when the folder is deleted. The identity alone would
    miss a folder deleted and created again at once: the new one may get the same inode number.
    """
    if current is None:
        return UNCHANGED if watched is None else GONE
    if watched is None:
        return APPEARED
    if watched != current:
        return REPLACED
    return ENDED if watch_ended else UNCHANGED


@dataclass
class Observation:
    """What we know about one candidate file while it settles."""

    folder: config_module.WatchFolder
    size: int
    mtime_ns: int
    changed_at: float  # monotonic time the size/mtime last changed (or first seen)
    awaiting_close: bool
    looked_at: float = float("-inf")  # monotonic time of the last stat of it


SETTLE_POLL_FRACTION = 0.25  # settling files are re-examined four times per settle period
MIN_SETTLE_POLL_SECONDS = 0.05
MAX_SETTLE_POLL_SECONDS = 0.5


def settle_poll_seconds(settle_seconds: float) -> float:
    """How often a settling file is looked at again (its stat repeated)."""
    poll = settle_seconds * SETTLE_POLL_FRACTION
    return min(MAX_SETTLE_POLL_SECONDS, max(MIN_SETTLE_POLL_SECONDS, poll))


class Settler:
    """Candidates waiting to be complete. Pure decisions over injected stat results and times."""

    def __init__(self, settle_seconds: float, grace_seconds: float = OPEN_WRITER_GRACE_SECONDS):
        self.settle_seconds = settle_seconds
        self.grace_seconds = max(grace_seconds, settle_seconds)
        self.poll_seconds = settle_poll_seconds(settle_seconds)
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
            self.candidates[path] = Observation(folder, size, mtime_ns, now, writing, now)
            return
        if (size, mtime_ns) != (current.size, current.mtime_ns):
            current.size, current.mtime_ns, current.changed_at = size, mtime_ns, now
        if writing:
            current.awaiting_close = True
        elif kind == CLOSED:
            current.awaiting_close = False

    def forget(self, path: str) -> None:
        self.candidates.pop(path, None)

    def worth_a_look(self, observation: Observation, now: float) -> bool:
        """Whether to stat a candidate now: a poll period since the last look, or it may have
        become complete. The loop wakes for every finished step; a burst of files settling
        would otherwise cost a stat of each of them at every wake."""
        wait = self.grace_seconds if observation.awaiting_close else self.settle_seconds
        return (
            now - observation.looked_at >= self.poll_seconds or now - observation.changed_at >= wait
        )

    def observe(self, path: str, size: int, mtime_ns: int, now: float) -> bool:
        """Compare a fresh stat with the last one; True if the file now counts as complete."""
        current = self.candidates[path]
        current.looked_at = now
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
        for own in (folder.output_dir, folder.move_to, folder.failed_move_to)
    )


def _descend(entry: os.DirEntry[str], folder: config_module.WatchFolder) -> bool:
    """Subfolders are scanned unless hidden, temporary or our own output/move_to folder."""
    return not is_ignored_name(entry.name) and not excluded(entry.path, folder)


def scan(folder: config_module.WatchFolder) -> Iterator[str]:
    """Every matching file in a watched folder (and its subfolders when recursive)."""
    for path, _ in scan_with_stats(folder):
        yield path


def scan_with_stats(
    folder: config_module.WatchFolder,
) -> Iterator[tuple[str, os.stat_result | None]]:
    """`scan`, each path with what `stat_regular` says of it where one lstat can tell (a regular
    file: the directory entry's type says so without a call), else None (a symlink: ask
    `stat_regular`). A rescan of 100,000 files costs one system call each, and the listing is
    read as it comes, never held whole."""
    root = str(folder.path)
    real_root = os.path.realpath(root)
    stack = [root]
    while stack:
        directory = stack.pop()
        try:
            listing = os.scandir(directory)
        except (FileNotFoundError, NotADirectoryError):
            if directory == root:
                return  # a missing watch folder is waited for; the Watcher says so once
            continue  # a subfolder removed while we looked
        except OSError as error:
            log.warning("cannot list folder %s: %s", directory, error.strerror)
            continue
        with listing:
            for entry in _entries(listing, directory):
                try:
                    if entry.is_dir(follow_symlinks=False):
                        if folder.recursive and _descend(entry, folder):
                            stack.append(entry.path)
                        continue
                    if not matches(entry.name, folder.patterns):
                        continue
                    if entry.is_symlink():
                        if inside(os.path.realpath(entry.path), real_root):
                            yield entry.path, None
                        continue
                    found = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if stat.S_ISREG(found.st_mode):
                    yield entry.path, found


def _entries(listing: Iterator[os.DirEntry[str]], directory: str) -> Iterator[os.DirEntry[str]]:
    """The entries of an open listing; a read error ends it with a warning, as at its start."""
    try:
        yield from listing
    except OSError as error:
        log.warning("cannot list folder %s: %s", directory, error.strerror)


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
            and not inside_ignored_folder(path, str(self.folder.path))
            and not excluded(path, self.folder)
        ):
            self.hints.put(Hint(kind, path, self.folder))
            self.wake.set()


@dataclass(frozen=True)
class Hint:
    kind: str
    path: str
    folder: config_module.WatchFolder


class NewNamesEmitter(EventEmitter):
    """Polls a folder (a network mount sends no events) for names that were not there at the
    last look, and reports each as created. watchdog's own polling emitter stats every file at
    every pass and keeps two snapshots: 0.8 s of CPU every 2 s and 300 MB for a folder of
    100,000 files. A new name is all a drop needs: the settle logic stats the file from then
    on. A file rewritten in place under its old name is found by the periodic rescan."""

    def __init__(
        self,
        event_queue: EventQueue,
        watch: ObservedWatch,
        *,
        timeout: float = POLLING_INTERVAL_SECONDS,
        event_filter: list[type[FileSystemEvent]] | None = None,
    ) -> None:
        super().__init__(event_queue, watch, timeout=timeout, event_filter=event_filter)
        self._names: set[int] = set()  # hashes of the paths seen at the last pass

    def on_thread_start(self) -> None:
        try:
            self._names = {
                hash(path)
                for path in paths_under(self.watch.path, recursive=self.watch.is_recursive)
            }
        except OSError:
            self._names = set()  # the first pass reports what it finds; the rescan has it too

    def queue_events(self, timeout: float) -> None:
        if self.stopped_event.wait(timeout):
            return
        # Hashes, not paths, are kept between passes: a fifth of the memory. Two paths of the
        # same hash would hide a new file until the next rescan, which is what a rescan is for.
        names: set[int] = set()
        fresh = []
        try:
            for path in paths_under(self.watch.path, recursive=self.watch.is_recursive):
                name = hash(path)
                names.add(name)
                if name not in self._names:
                    fresh.append(path)
        except (FileNotFoundError, NotADirectoryError):
            self.queue_event(DirDeletedEvent(self.watch.path))  # the watch ends; `refresh` sees
            self.stop()
            return
        except OSError:
            return  # a passing trouble of the mount: the names are compared again next time
        for path in sorted(fresh):
            self.queue_event(FileCreatedEvent(path))
        self._names = names


def paths_under(root: str, *, recursive: bool) -> Iterator[str]:
    """The paths of everything but folders under `root` (in its subfolders too if `recursive`),
    from the listings alone: no stat. OSError if `root` itself cannot be listed."""
    folders = [root]
    while folders:
        directory = folders.pop()
        try:
            listing = os.scandir(directory)
        except OSError:
            if directory == root:
                raise
            continue  # a subfolder removed or unreadable: the rescan reports it
        with listing:
            for entry in _entries(listing, directory):
                try:
                    is_folder = entry.is_dir(follow_symlinks=False)
                except OSError:
                    continue
                if not is_folder:
                    yield entry.path
                elif recursive:
                    folders.append(entry.path)


class NamePollingObserver(BaseObserver):
    """An observer that polls its folders' names every POLLING_INTERVAL_SECONDS."""

    def __init__(self) -> None:
        super().__init__(emitter_class=NewNamesEmitter, timeout=POLLING_INTERVAL_SECONDS)


def polling_observer() -> BaseObserver:
    return NamePollingObserver()


def _inotify_observer() -> BaseObserver:
    if sys.platform.startswith("linux"):
        from watchdog.observers.inotify import InotifyObserver  # noqa: PLC0415 - Linux only

        # Full events: a file moved in from outside arrives as a move (complete), not a create.
        return InotifyObserver(generate_full_events=True)
    from watchdog.observers import Observer  # noqa: PLC0415

    observer: BaseObserver = Observer()
    return observer


# watchdog only logs it when a subfolder created later cannot be watched because a limit is
# reached (the rest of the tree stays unwatched); its log records are how we learn of it.
_WATCHDOG_INOTIFY_LOG = logging.getLogger("watchdog.observers.inotify")


class _UnwatchedSubfolders(logging.Handler):
    """Collects the subfolders watchdog could not watch for an inotify limit. `emit` runs in the
    observer's thread: it only queues, and never raises."""

    def __init__(self, wake: Waker) -> None:
        super().__init__(logging.WARNING)
        self._found: queue.SimpleQueue[tuple[str, OSError]] = queue.SimpleQueue()
        self._wake = wake

    def emit(self, record: logging.LogRecord) -> None:
        arguments = record.args if isinstance(record.args, tuple) else ()
        if not str(record.msg).startswith("Unable to watch") or len(arguments) != 2:
            return
        path, error = arguments
        if isinstance(error, OSError) and error.errno in inotify_limits.LIMIT_ERRORS:
            self._found.put((os.fsdecode(path) if isinstance(path, bytes | str) else "", error))
            self._wake.set()  # the main loop falls back now, not at its next idle wake

    def take(self) -> list[tuple[str, OSError]]:
        found = []
        while True:
            try:
                found.append(self._found.get_nowait())
            except queue.Empty:
                return found


@dataclass
class _Watch:
    """One watched folder: its observer while it exists, and which folder that observer watches."""

    folder: config_module.WatchFolder
    observer: BaseObserver | None = None  # None while the folder is missing (waited for)
    identity: Identity | None = None  # the folder the observer was scheduled on
    watched_before: bool = False  # for the log: "back" rather than "exists now"
    failing: str | None = None  # why watching it failed last time (logged once per reason)
    fell_back: bool = False  # polled because an inotify limit was reached (until a restart)


class Watcher:
    """The observers of every watched folder, feeding one queue of hints.

    A folder that is missing (at start, or deleted, moved away or unmounted later) has no
    observer; `refresh` notices it coming back, or being replaced by another folder under the
    same path, and watches it (again).
    """

    def __init__(self, folders: Sequence[config_module.WatchFolder], wake: Waker):
        self.wake = wake  # set on every hint so the main loop reacts at once
        self.hints: queue.SimpleQueue[Hint] = queue.SimpleQueue()
        self.watches = [_Watch(folder) for folder in folders]
        self.next_refresh = 0.0
        self.unwatched = _UnwatchedSubfolders(wake)

    @property
    def folders(self) -> tuple[config_module.WatchFolder, ...]:
        return tuple(watch.folder for watch in self.watches)

    @property
    def observers(self) -> list[BaseObserver]:
        return [watch.observer for watch in self.watches if watch.observer is not None]

    def missing(self) -> list[config_module.WatchFolder]:
        """Folders waited for: missing, gone, or not watchable yet."""
        return [watch.folder for watch in self.watches if watch.observer is None]

    def start(self) -> None:
        """Watch every folder that exists; missing ones are waited for (the caller, which knows
        their config keys, reports them). OSError if an existing folder cannot be watched."""
        _WATCHDOG_INOTIFY_LOG.addHandler(self.unwatched)
        if _WATCHDOG_INOTIFY_LOG.getEffectiveLevel() > logging.WARNING:  # log_level: error
            _WATCHDOG_INOTIFY_LOG.setLevel(logging.WARNING)  # its warnings must reach us
        for watch in self.watches:
            self._begin(watch)

    def _begin(self, watch: _Watch) -> None:
        """Schedule an observer on the folder if it exists; OSError if that fails."""
        identity = folder_identity(watch.folder.path)
        if identity is None:
            return
        try:
            try:
                watch.observer = self._observe(watch.folder, polling=watch.fell_back)
            except OSError as error:
                if watch.folder.polling or error.errno not in inotify_limits.LIMIT_ERRORS:
                    raise
                self._fall_back(watch, error)
                watch.observer = self._observe(watch.folder, polling=True)
        except (FileNotFoundError, NotADirectoryError):
            return  # gone between the stat and the watch: waited for like any missing folder
        watch.identity = identity  # from before the watch: a change in between shows next time
        watch.watched_before = True

    def _end(self, watch: _Watch) -> None:
        if watch.observer is not None:
            _stop_all([watch.observer])
        watch.observer = None
        watch.identity = None

    def _fall_back(self, watch: _Watch, error: OSError) -> None:
        """An inotify limit is reached: poll this folder instead, and say which sysctl to raise
        (once: the folder stays polled until a restart)."""
        watch.fell_back = True
        folder = watch.folder
        sysctl = inotify_limits.LIMIT_ERRORS[error.errno or 0]
        needed = (
            inotify_limits.count_folders(folder.path, recursive=folder.recursive)
            if sysctl == inotify_limits.WATCHES_SYSCTL
            else sum(not other.folder.polling for other in self.watches)
        )
        log.warning(
            "cannot watch folder %s with inotify (%s: %s): polling it every %.0f s instead, so "
            "no file is missed; to watch it with inotify again, %s, then restart the daemon",
            shown(folder.path), sysctl, error.strerror or error, POLLING_INTERVAL_SECONDS,
            inotify_limits.sysctl_advice(sysctl, needed, inotify_limits.read_limit(sysctl)),
        )  # fmt: skip

    def _observe(self, folder: config_module.WatchFolder, *, polling: bool) -> BaseObserver:
        event_filter = [FileCreatedEvent, FileModifiedEvent, FileClosedEvent, FileMovedEvent]
        if folder.polling or polling:
            observer: BaseObserver = polling_observer()
        else:
            crashpoints.simulated_watch_limit()
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

    def refresh(self, now: float) -> list[config_module.WatchFolder]:
        """Check, at most every FOLDER_CHECK_SECONDS (`now`: monotonic), that each folder is
        still the one watched: one stat per folder. A folder gone is let go and waited for; one
        back, replaced or whose watch ended is watched again. Returns the folders watched anew:
        files may have arrived unseen meanwhile, so the caller scans them now."""
        renewed = self._fall_back_unwatched()  # at once: files there are being missed
        if now < self.next_refresh:
            return renewed
        self.next_refresh = now + FOLDER_CHECK_SECONDS
        for watch in self.watches:
            observer = watch.observer
            # Only an observer thread that still runs can have a watch that ended by itself;
            # a dead observer thread is a death (`alive`), unless its folder is gone.
            ended = observer is not None and observer.is_alive() and not _watching(observer)
            change = folder_change(
                watch.identity, folder_identity(watch.folder.path), watch_ended=ended
            )
            if change == UNCHANGED:
                continue
            if change == GONE:
                log.warning(
                    "watch folder %s is gone (deleted, moved or unmounted); waiting for it to "
                    "come back",
                    shown(watch.folder.path),
                )
                self._end(watch)
                continue
            if self._renew(watch, change):
                renewed.append(watch.folder)
        return renewed

    def _renew(self, watch: _Watch, change: str) -> bool:
        """Watch the folder now under the path; True if it is watched."""
        before = watch.watched_before
        self._end(watch)
        try:
            self._begin(watch)
        except OSError as error:
            reason = error.strerror or str(error)
            if watch.failing != reason:
                log.error(
                    "cannot watch folder %s: %s; trying again every %.0f s",
                    shown(watch.folder.path), reason, FOLDER_CHECK_SECONDS,
                )  # fmt: skip
            watch.failing = reason
            return False
        if watch.observer is None:
            return False  # gone again already
        watch.failing = None
        folder = shown(watch.folder.path)
        if change == REPLACED:
            log.warning(
                "watch folder %s is another folder now (created again, moved in or mounted); "
                "watching it again",
                folder,
            )
        elif change == ENDED:
            log.warning("the watch on folder %s ended (deleted and created again); watching it "
                        "again", folder)  # fmt: skip
        elif before:
            log.info("watch folder %s is back; watching it again", folder)
        else:
            log.info("watch folder %s exists now; watching it", folder)
        return True

    def reschedule(
        self, folders: Sequence[config_module.WatchFolder]
    ) -> tuple[list[config_module.WatchFolder], list[config_module.WatchFolder]]:
        """Watch exactly `folders` from now on (a config reload); returns (added, removed).

        A folder whose settings changed is removed and added again: its handler carries them.
        A new folder that is missing is waited for. New observers start before old ones stop,
        so if one cannot start (OSError, e.g. the inotify watch limit) nothing has changed and
        the error propagates.
        """
        wanted = tuple(folders)
        current = self.folders
        added = [folder for folder in wanted if folder not in current]
        started: list[_Watch] = []
        try:
            for folder in added:
                watch = _Watch(folder)
                self._begin(watch)
                started.append(watch)
        except BaseException:
            _stop_all([watch.observer for watch in started if watch.observer is not None])
            raise
        # Folders are compared by value (all their settings), not hashed: a list suffices.
        removed = [watch.folder for watch in self.watches if watch.folder not in wanted]
        for watch in self.watches:
            if watch.folder not in wanted:
                self._end(watch)
        kept = [watch for watch in self.watches if watch.folder in wanted] + started
        self.watches = [
            next(watch for watch in kept if watch.folder == folder) for folder in wanted
        ]
        return added, removed

    def alive(self) -> bool:
        """False if an observer thread died while its folder is still the one it watches. A
        folder deleted, moved or unmounted under its observer is `refresh`'s business."""
        return all(
            watch.observer.is_alive() or folder_identity(watch.folder.path) != watch.identity
            for watch in self.watches
            if watch.observer is not None
        )

    def _fall_back_unwatched(self) -> list[config_module.WatchFolder]:
        """Folders with a subfolder inotify could not watch (created after the limit was
        reached): polled from now on, and returned so the caller scans them now."""
        renewed = []
        for path, error in self.unwatched.take():
            for watch in self.watches:
                if watch.fell_back or watch.folder.polling or watch.observer is None:
                    continue
                if inside(path, str(watch.folder.path)):
                    self._end(watch)
                    self._fall_back(watch, error)
                    self._begin(watch)
                    renewed.append(watch.folder)
        return renewed

    def stop(self) -> None:
        _WATCHDOG_INOTIFY_LOG.removeHandler(self.unwatched)
        _stop_all(self.observers)
        for watch in self.watches:
            watch.observer = None
            watch.identity = None

    def drain(self, limit: int = 10_000) -> list[Hint]:
        hints: list[Hint] = []
        while len(hints) < limit:
            try:
                hints.append(self.hints.get_nowait())
            except queue.Empty:
                break
        return hints


def _watching(observer: BaseObserver) -> bool:
    """True while the observer's watch runs: watchdog ends it (not the observer thread) when
    the watched folder is deleted."""
    emitters = list(observer.emitters)
    return bool(emitters) and all(emitter.is_alive() for emitter in emitters)


def _stop_all(observers: Sequence[BaseObserver]) -> None:
    for observer in observers:
        observer.stop()
    for observer in observers:
        observer.join(timeout=5)
