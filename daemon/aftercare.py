"""After a file ends: `after_done` (move or delete the audio), the `on_complete` program, and
deleting objects nothing needs any more (after each result, and the sweep of crash orphans).

What happens here never changes a file's result: a failing hook or move is logged, a delete
that fails is retried by the sweep (at start and hourly).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from daemon import hooks, layout, metrics, state
from daemon.config import Config
from daemon.logs import shown
from daemon.render import files
from daemon.storage import ObjectStore, StorageError

log = logging.getLogger(__name__)

HOOK_MAX_ATTEMPTS = 2  # a hook cut short by a crash runs once more, never in a loop
_OUR_KEY = re.compile(r"^[0-9a-f]{64}\.ogg$")  # what storage.object_key makes, after the prefix


class Aftercare:
    """What follows a file's end; safe to call from several worker threads."""

    def __init__(
        self,
        config: Config,
        store: state.Store,
        objects: ObjectStore,
        *,
        clock: Callable[[], float],
        stopping: threading.Event,
    ) -> None:
        self.config = config
        self.store = store
        self.objects = objects
        self.clock = clock
        self.stopping = stopping
        self._deletions: dict[int, state.FileRow] = {}  # row id -> row, for delete_object_soon
        self._deletions_lock = threading.Lock()

    def after_done(self, row: state.FileRow) -> None:
        """`after_done: move | delete` for a transcribed file (still the version transcribed)."""
        folder = layout.folder_of(self.config, row.path, row.folder)
        if folder.after_done == "keep" or not self._still_this_version(row):
            return
        audio = Path(row.path)
        try:
            if folder.after_done == "delete":
                audio.unlink()
                log.info("deleted %s after transcription (after_done: delete)", shown(audio))
                return
            assert folder.move_to is not None  # noqa: S101 - the config requires it
            target_dir = layout.relative_output_dir(
                audio, replace(folder, output_dir=folder.move_to)
            )
            target_dir.mkdir(parents=True, exist_ok=True)
            target = files.unused_name(target_dir, audio.name)
            companions = []
            if folder.output_dir is None:  # outputs beside the audio move along with it
                whole = row.output_name is not None
                for extension in self.config.outputs:
                    source = layout.row_output(self.config, row, extension)
                    name = layout.outputs_name(target, whole_name=whole)
                    companions.append(
                        (source, layout.output_path(target, target_dir, extension, name))
                    )
            shutil.move(audio, target)
            for source, destination in companions:
                if source.exists():
                    shutil.move(source, destination)
        except OSError as error:
            log.error(
                "after_done: could not %s %s: %s", folder.after_done, shown(audio), error.strerror
            )
            return
        self.store.update(row.id, self.clock(), moved_to=str(target))
        log.info("moved %s to %s (after_done: move)", shown(audio), shown(target))

    def _still_this_version(self, row: state.FileRow) -> bool:
        try:
            found = os.stat(row.path)
        except OSError:
            return False
        return (found.st_size, found.st_mtime_ns) == (row.size, row.mtime_ns)

    def ending(self, row: state.FileRow) -> hooks.Ending:
        """The facts of a finished row, as the hook and `transcribe` see them."""
        audio = Path(row.moved_to or row.path)

        def existing(path: Path) -> str:
            return str(path) if path.exists() else ""

        if row.state == state.DONE:
            return hooks.Ending(
                audio=str(audio), result="done",
                txt=existing(layout.row_output(self.config, row, "txt")),
                json=existing(layout.row_output(self.config, row, "json")),
            )  # fmt: skip
        return hooks.Ending(
            audio=str(audio), result="failed", error=existing(layout.row_error(self.config, row))
        )

    def run_hook(self, row: state.FileRow) -> None:
        """Run `on_complete` for a finished row once (again only if a crash cut it short)."""
        hook = self.config.on_complete
        if hook is None or not row.hook_pending:
            return
        now = self.clock()
        if row.hook_attempts >= HOOK_MAX_ATTEMPTS:
            log.warning("on_complete for %s not run again: it was cut short %d times",
                        shown(row.path), row.hook_attempts)  # fmt: skip
            self.store.update(row.id, now, hook_pending=0)
            return
        self.store.update(row.id, now, hook_attempts=row.hook_attempts + 1)
        hooks.run(hook, self.ending(row), self.config.secrets())
        self.store.update(row.id, self.clock(), hook_pending=0)

    def sweep_hooks(self) -> None:
        """Hooks that a crash or stop kept from running."""
        for row in self.store.hooks_pending():
            if self.stopping.is_set():
                return
            self.run_hook(row)

    def delete_object(self, row: state.FileRow) -> None:
        if row.object_key is None or not self.config.storage.delete_after or row.object_deleted:
            return
        # Another version with the same content may still need the object.
        if self.store.object_in_use(row.object_key, exclude=row.id):
            return
        try:
            self.objects.delete(row.object_key)
        except StorageError as error:
            metrics.error(error.service, error.kind)
            log.warning(
                "could not delete object %s (will retry at start): %s", row.object_key, error
            )
            return
        self.store.update(row.id, self.clock(), object_deleted=1)

    def delete_object_soon(self, row: state.FileRow) -> None:
        """`delete_object`, done with others in one request by `delete_waiting_objects` (a burst
        of finished files costs one request, not one each). Until then the row says its object
        is not deleted: a crash leaves it to the start-up sweep."""
        if row.object_key is None or not self.config.storage.delete_after or row.object_deleted:
            return
        with self._deletions_lock:
            self._deletions[row.id] = row

    def deletions_waiting(self) -> bool:
        with self._deletions_lock:
            return bool(self._deletions)

    def delete_waiting_objects(self) -> None:
        """Delete the objects `delete_object_soon` collected, nothing else needs, in one go."""
        with self._deletions_lock:
            rows, self._deletions = list(self._deletions.values()), {}
        rows = [row for row in rows if not self.store.object_in_use(row.object_key or "",
                                                                      exclude=row.id)]  # fmt: skip
        keys = sorted({row.object_key for row in rows if row.object_key is not None})
        if not keys:
            return
        try:
            failed = set(self.objects.delete_many(keys))
        except StorageError as error:
            metrics.error(error.service, error.kind)
            log.warning("could not delete %d object(s) (will retry at start): %s", len(keys), error)
            return
        if failed:
            log.warning("could not delete object(s) %s (will retry at start)",
                        ", ".join(sorted(failed)))  # fmt: skip
        deleted = [row.id for row in rows if row.object_key not in failed]
        self.store.mark_objects_deleted(deleted, self.clock())

    def sweep_objects(self) -> int:
        """Delete objects nothing needs any more: failed deletions and crash orphans.

        The bucket is listed before the in-use check of each key, so an upload that starts
        meanwhile is either not listed or already recorded as in use.
        """
        for row in self.store.undeleted_objects():
            if self.stopping.is_set():
                return 0
            self.delete_object(row)
        try:
            keys = self.objects.list_keys()
        except StorageError as error:
            log.warning("could not list the bucket to find orphaned objects: %s", error)
            return 0
        deleted = 0
        for key in keys:
            if self.stopping.is_set() or not _OUR_KEY.match(
                key[len(self.objects.settings.prefix) :]
            ):
                continue
            if self.store.object_in_use(key, exclude=-1):
                continue
            try:
                self.objects.delete(key)
            except StorageError as error:
                log.warning("could not delete orphaned object %s: %s", key, error)
                continue
            deleted += 1
        if deleted:
            log.info("deleted %d orphaned object(s) left by an earlier crash", deleted)
        return deleted
