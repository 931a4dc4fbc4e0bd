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
from functools import partial
from pathlib import Path

from daemon import hooks, layout, metrics, retention, state
from daemon.config import Config, WatchFolder
from daemon.logs import shown
from daemon.render import files
from daemon.storage import INLINE_KEY_PREFIX, ObjectStore, StorageError

log = logging.getLogger(__name__)

HOOK_MAX_ATTEMPTS = 2  # a hook cut short by a crash runs once more, never in a loop
RETENTION_BATCH = 10_000  # audio moved or deleted per sweep at most; the next sweep goes on
PRUNE_PAGE = 1000  # rows looked at per read while pruning: short reads, the daemon keeps going
PRUNE_INTERVAL_SECONDS = 86400.0  # rows gone for months need no hourly look; once a day it is
_OUR_KEY = re.compile(r"^[0-9a-f]{64}\.ogg$")  # what storage.object_key makes, after the prefix


class Aftercare:
    """What follows a file's end; safe to call from several worker threads."""

    def __init__(
        self,
        config: Config,
        store: state.Store,
        objects: ObjectStore | None,
        *,
        clock: Callable[[], float],
        stopping: threading.Event,
    ) -> None:
        self.config = config
        self.store = store
        self.objects = objects  # None: no storage (API v3 with the audio inline)
        self.clock = clock
        self.stopping = stopping
        self.pruned_at: float | None = None  # wall time of the last pruning of the state file
        self._acting: set[int] = set()  # rows whose audio is being moved or deleted now
        self._acting_lock = threading.Lock()
        self._deletions: dict[int, state.FileRow] = {}  # row id -> row, for delete_object_soon
        self._deletions_lock = threading.Lock()

    def rule(self, folder: WatchFolder, ended: state.State) -> retention.Rule:
        """What `folder` does with the audio of a file that ended `ended`."""
        return retention.rule_for(
            ended, after_done=folder.after_done, after_done_days=folder.after_done_days,
            after_failed=folder.after_failed, after_failed_days=folder.after_failed_days,
        )  # fmt: skip

    def due_at(self, row: state.FileRow, ended: state.State, now: float) -> float | None:
        """The `due_at` a row ending `ended` now is recorded with: when its audio is moved or
        deleted (None: kept). Recorded in the same write as the end, so a crash cannot lose it."""
        folder = layout.folder_of(self.config, row.path, row.folder)
        return retention.due_at(self.rule(folder, ended), now)

    def after_end(self, ended: state.FileRow) -> None:
        """`after_done` (after_failed), then the hook, for a row that just ended: `ended` is the
        row as its end was recorded. Each reads the row afresh (a move changes it), and only
        when it has something to do: with `keep` and no hook, nothing is read."""
        if _action_waits(ended):
            self.after_done(self.store.get(ended.id))
        if self._hook_waits(ended):
            self.run_hook(self.store.get(ended.id))

    def after_done(self, row: state.FileRow) -> None:
        """`after_done` for a transcribed file, `after_failed` for a failed one, if the folder's
        rule makes it due now (at once with no delay); the retention sweep takes it otherwise."""
        if not _action_waits(row):
            return
        with self._acting_lock:
            if row.id in self._acting:
                return  # the sweep and the file's own end reached it at once: one acts
            self._acting.add(row.id)
        try:
            self._act(self.store.get(row.id))
        finally:
            with self._acting_lock:
                self._acting.discard(row.id)

    def _act(self, row: state.FileRow) -> None:
        if row.due_at is None or row.finished_at is None:
            return  # done meanwhile
        if not os.path.isdir(row.folder):
            return  # the watch folder is missing (an unmounted share): its files look gone
        if row.state not in retention.RETAINED_STATES:
            return
        folder = layout.folder_of(self.config, row.path, row.folder)
        rule = self.rule(folder, row.state)
        now = self.clock()
        if not retention.is_due(rule, row.finished_at, now):
            return
        audio = Path(row.path)
        key = "after_done" if row.state == state.DONE else "after_failed"
        if not self._still_this_version(row):
            # Deleted, moved or rewritten meanwhile: a newer version has a row of its own.
            self.store.update(row.id, now, expect=row.state, due_at=None)
            return
        missing = [path for path in self._products(row) if not path.exists()]
        if missing:
            log.warning(
                "%s kept although %s says %s: %s is missing, and audio is never removed before "
                "what it produced is there",
                shown(audio), key, rule.action, shown(missing[0]),
            )  # fmt: skip
            self.store.update(row.id, now, expect=row.state, due_at=None)
            return
        when = (
            "" if rule.delay_seconds == 0
            else f", {retention.in_days(now - row.finished_at)} after its end"
        )  # fmt: skip
        if not self._unchanged(row):
            return  # re-queued by `retry` meanwhile: its audio is needed again
        try:
            if rule.action == retention.DELETE:
                audio.unlink()
                if self.store.update(row.id, self.clock(), expect=row.state, due_at=None):
                    log.info("deleted %s (%s: delete%s)", shown(audio), key, when)
                else:
                    self._raced(row, f"deleted {shown(audio)}")
                return
            target = self._move(row, folder)
        except OSError as error:
            log.error(
                "%s: could not %s %s: %s; trying again at the next sweep (within the hour)",
                key, rule.action, shown(audio), error.strerror,
            )  # fmt: skip
            return
        if self.store.update(
            row.id, self.clock(), expect=row.state, moved_to=str(target), due_at=None
        ):
            log.info("moved %s to %s (%s: move%s)", shown(audio), shown(target), key, when)
        else:
            self._raced(row, f"moved {shown(audio)} to {shown(target)}")

    def _unchanged(self, row: state.FileRow) -> bool:
        """Whether the row is still as `_act` read it: in its end state, its action still due.
        `retry` (another process) may re-queue a failed row at any moment; the updates above
        only change a row still in `row.state`, so a re-queued row keeps its own `due_at`."""
        try:
            current = self.store.get(row.id)
        except KeyError:
            return False
        return current.state == row.state and current.due_at is not None

    def _raced(self, row: state.FileRow, done: str) -> None:
        """The row moved on (re-queued by `retry`) between the last look and the action."""
        log.warning(
            "%s, but %s was re-queued meanwhile (retry); it goes on from the queue",
            done, shown(row.path),
        )  # fmt: skip

    def _products(self, row: state.FileRow) -> list[Path]:
        """What must still be there before the audio goes: NAME.error.json of a failed file; of
        a transcribed one the .json (the whole result: `render` makes the others from it), or
        each output when json is not among them."""
        if row.state != state.DONE:
            return [layout.row_error(self.config, row)]
        needed = ("json",) if "json" in self.config.outputs else self.config.outputs
        return [layout.row_output(self.config, row, extension) for extension in needed]

    def _move(self, row: state.FileRow, folder: WatchFolder) -> Path:
        """Move the audio (and what it produced, when that lies beside it) under the folder's
        move_to (failed_move_to for a failed file), keeping subfolders; where it went."""
        audio = Path(row.path)
        destination = folder.move_to if row.state == state.DONE else folder.failed_move_to
        assert destination is not None  # noqa: S101 - the config requires it
        target_dir = layout.relative_output_dir(audio, replace(folder, output_dir=destination))
        target_dir.mkdir(parents=True, exist_ok=True)
        target = files.unused_name(target_dir, audio.name)
        companions = []
        if folder.output_dir is None:  # outputs beside the audio move along with it
            name = layout.outputs_name(target, whole_name=row.output_name is not None)
            if row.state == state.DONE:
                for extension in self.config.outputs:
                    source = layout.row_output(self.config, row, extension)
                    companions.append(
                        (source, layout.output_path(target, target_dir, extension, name))
                    )
            else:
                companions.append(
                    (
                        layout.row_error(self.config, row),
                        layout.error_path(target, target_dir, name),
                    )
                )
        shutil.move(audio, target)
        for source, moved in companions:
            if source.exists():
                shutil.move(source, moved)
        return target

    def sweep_retention(self) -> None:
        """Audio whose retention delay has passed is moved or deleted; at most once a day, the
        rows of files long gone are forgotten (`state_retention_days`)."""
        now = self.clock()
        acting = [
            (folder, ended)
            for folder in self.config.watch
            for ended in retention.RETAINED_STATES
            if self.rule(folder, ended).acts
        ]
        dropped = self.store.drop_retention((str(folder.path), ended) for folder, ended in acting)
        if dropped:
            log.info(
                "the audio of %d finished file(s) is kept: their folder now says keep, or is no "
                "longer in the config",
                dropped,
            )
        for folder, ended in acting:
            rule = self.rule(folder, ended)
            rows = self.store.retention_due(
                str(folder.path), ended, retention.cutoff(rule, now), limit=RETENTION_BATCH
            )
            for row in rows:
                if self.stopping.is_set():
                    return
                self.after_done(row)
        if self.pruned_at is None or not 0 <= now - self.pruned_at < PRUNE_INTERVAL_SECONDS:
            self.prune_state(now)
            self.pruned_at = now

    def _anything_left(self, row: state.FileRow) -> bool:
        """Whether a row's audio is still at its path, or what it produced still holds its names
        where it was written (outputs moved along with the audio no longer do)."""
        if os.path.lexists(row.path):
            return True
        folder = layout.folder_of(self.config, row.path, row.folder)
        if row.moved_to is not None and folder.output_dir is None:
            return False
        products = [layout.row_output(self.config, row, ext) for ext in self.config.outputs]
        products.append(layout.row_error(self.config, row))
        return any(os.path.lexists(path) for path in products)

    def prune_state(self, now: float) -> int:
        """Forget the rows of files long gone (`retention.prunable`); how many were forgotten."""
        keep = self.config.state_retention_days * retention.DAY_SECONDS
        folders_there: dict[str, bool] = {}
        forgotten = 0
        after_id = 0
        while not self.stopping.is_set():
            candidates = self.store.prune_candidates(
                now - keep, after_id=after_id, limit=PRUNE_PAGE
            )
            if not candidates:
                break
            after_id = candidates[-1][0].id
            chosen = []
            for row, newer in candidates:
                # An unmounted share makes every file look gone: its rows wait for it.
                if row.folder not in folders_there:
                    folders_there[row.folder] = os.path.isdir(row.folder)
                if not folders_there[row.folder]:
                    continue
                candidate = retention.Candidate(
                    state=row.state, updated_at=row.updated_at,
                    action_pending=row.due_at is not None, hook_pending=bool(row.hook_pending),
                    owned=row.owner is not None, newer_version=newer,
                    object_pending=row.object_key is not None and not row.object_deleted
                    and self.config.storage is not None and self.config.storage.delete_after,
                )  # fmt: skip
                if retention.prunable(candidate, now, keep, partial(self._anything_left, row)):
                    chosen.append(row.id)
            forgotten += self.store.forget(chosen)
        if forgotten:
            log.info(
                "forgot %d file(s) gone for more than %s (state_retention_days)",
                forgotten, retention.in_days(keep),
            )  # fmt: skip
        return forgotten

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
        if hook is None or not self._hook_waits(row):
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

    def _hook_waits(self, row: state.FileRow) -> bool:
        """Whether `on_complete` is to run for this row (configured, and pending for it)."""
        return self.config.on_complete is not None and bool(row.hook_pending)

    def sweep_hooks(self) -> None:
        """Hooks that a crash or stop kept from running."""
        for row in self.store.hooks_pending():
            if self.stopping.is_set():
                return
            self.run_hook(row)

    def deletes_object(self, row: state.FileRow) -> bool:
        """Whether `delete_object` would delete this row's object (unless another row needs it):
        storage deletes after use, and the row has an object in the bucket not deleted yet."""
        storage = self.config.storage
        if row.object_key is None or storage is None or not storage.delete_after:
            return False
        return not (row.object_deleted or self.objects is None or _inline(row))

    def delete_object(self, row: state.FileRow) -> None:
        if not self.deletes_object(row) or row.object_key is None or self.objects is None:
            return  # (the last two: checked already, for the type checker)
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
        if not self.deletes_object(row):
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
        if not keys or self.objects is None:
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
        if self.objects is None:
            return 0
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


def _action_waits(row: state.FileRow) -> bool:
    """Whether the row's audio waits for after_done/after_failed (recorded with its end)."""
    return row.due_at is not None


def _inline(row: state.FileRow) -> bool:
    """Sent inline (recorded without storage): there is no object to delete."""
    return (row.object_key or "").startswith(INLINE_KEY_PREFIX)
