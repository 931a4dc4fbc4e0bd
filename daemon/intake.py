"""Intake: from filesystem hints to settled file versions in the state file.

Hints (watchdog events, changed files handed back by a step, the periodic scan) name paths;
each becomes a candidate in the `Settler` unless that exact version (size, mtime) is already
known. A candidate that has stayed still long enough is recorded as a new file version, which is
where its lifecycle starts. The main loop owns this object: nothing here runs in another thread
except `file_changed`, which only queues.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable

from daemon import layout, state, watching
from daemon.config import Config, WatchFolder
from daemon.logs import shown

log = logging.getLogger(__name__)


SIZE_BITS = 64  # sizes below 2**64 bytes: every file there is


def version_key(size: int, mtime_ns: int) -> int:
    """One int for a file version (size, mtime): a third of the memory of the pair, which
    counts with 100,000 finished files in a folder."""
    return mtime_ns << SIZE_BITS | size


class Intake:
    def __init__(
        self,
        config: Config,
        watcher: watching.Watcher,
        wake: watching.Waker,
        *,
        clock: Callable[[], float],
        monotonic: Callable[[], float],
    ) -> None:
        self.config = config
        self.watcher = watcher
        self.wake = wake
        self.clock = clock
        self.monotonic = monotonic
        self.settler = watching.Settler(config.settle_seconds)
        self.known: dict[str, int] = {}  # path -> the version recorded last (`version_key`)
        self._changed: list[str] = []
        self._changed_lock = threading.Lock()

    def load_known(self, versions: Iterable[tuple[str, int, int]]) -> None:
        """The versions the state file has (path, size, mtime_ns): skipped unread by scans."""
        self.known = {path: version_key(size, mtime_ns) for path, size, mtime_ns in versions}

    def __len__(self) -> int:
        """Files waiting to settle."""
        return len(self.settler)

    def file_changed(self, path: str) -> None:
        """Called from workers when a file changed under a step: judge it again from scratch."""
        with self._changed_lock:
            self._changed.append(path)
        self.wake.set()

    def take_hints(self) -> None:
        with self._changed_lock:
            changed, self._changed = self._changed, []
        for path in changed:
            self.known.pop(path, None)
            try:
                folder = layout.folder_for(path, self.config.watch)
            except ValueError:
                continue
            self.note(path, watching.SEEN, folder)
        for hint in self.watcher.drain():
            self.note(hint.path, hint.kind, hint.folder)

    def note(
        self, path: str, kind: str, folder: WatchFolder, found: os.stat_result | None = None
    ) -> None:
        """A hint about `path`; `found` is its stat when the caller has just made it."""
        if found is None:
            found = watching.stat_regular(path, str(folder.path))
        if found is None:
            self.settler.forget(path)
            return
        if path not in self.settler.candidates and self.known.get(path) == version_key(
            found.st_size, found.st_mtime_ns
        ):
            return  # this version is already known: no need to wait for it to settle
        self.settler.note(
            path, kind, folder, size=found.st_size, mtime_ns=found.st_mtime_ns, now=self.monotonic()
        )

    def scan_all(self) -> int:
        """Look at every file of every folder (unchanged known ones cost one stat); how many."""
        seen = 0
        for folder in self.config.watch:
            for path, found in watching.scan_with_stats(folder):
                self.note(path, watching.SEEN, folder, found)
                seen += 1
        return seen

    def refresh_folders(self) -> None:
        """Watch folders deleted, moved away or unmounted are waited for; once back (or replaced
        by a new folder) they are watched again and scanned at once, so that files dropped
        meanwhile do not wait for the next rescan."""
        for folder in self.watcher.refresh(self.monotonic()):
            for path in watching.scan(folder):
                self.note(path, watching.SEEN, folder)

    def settle(self, store: state.Store) -> int:
        """Record the candidates that stayed still long enough; how many were recorded.

        StateWriteError propagates; the candidates stay candidates, recorded once the state file
        can be written.
        """
        now = self.monotonic()
        settled: list[state.NewVersion] = []
        for path, observation in list(self.settler.candidates.items()):
            if not self.settler.worth_a_look(observation, now):
                continue
            found = watching.stat_regular(path, str(observation.folder.path))
            if found is None:
                self.settler.forget(path)
                continue
            if not self.settler.observe(path, found.st_size, found.st_mtime_ns, now):
                continue
            version = (found.st_size, found.st_mtime_ns)
            if self.known.get(path) == version_key(*version):
                self.settler.forget(path)
                continue
            latest = store.latest_for_path(path)  # `transcribe` may have recorded it meanwhile
            if latest is not None and (latest.size, latest.mtime_ns) == version:
                self.settler.forget(path)
                self.known[path] = version_key(*version)
                continue
            settled.append(state.NewVersion(path, str(observation.folder.path), *version))
        if settled:
            store.add_versions(settled, self.clock())  # one commit for a burst
        for new in settled:
            self.settler.forget(new.path)
            self.known[new.path] = version_key(new.size, new.mtime_ns)
            log.info("settled %s (%d bytes)", shown(new.path), new.size)
        return len(settled)

    def refit(self, settings: Config) -> None:
        """A reload: settling files and queued hints follow the new folders; others are let go."""
        self.config = settings
        settler = watching.Settler(settings.settle_seconds)
        settler.candidates = self.settler.candidates
        self.settler = settler
        for path, observation in list(settler.candidates.items()):
            try:
                observation.folder = layout.folder_for(path, settings.watch)
            except ValueError:
                settler.forget(path)
        for hint in self.watcher.drain():
            try:
                folder = layout.folder_for(hint.path, settings.watch)
            except ValueError:
                continue
            self.note(hint.path, hint.kind, folder)
