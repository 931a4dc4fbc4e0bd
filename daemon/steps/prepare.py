"""The first step of a file version: check the audio and hash it, then reuse what the same
content already paid for (a saved result, a twin's operation), adopt outputs that are already
there, or claim the upload."""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import logging
import threading
from dataclasses import replace
from pathlib import Path

from daemon import audio, layout, lifecycle, render, state
from daemon.crashpoints import crash_point
from daemon.logs import shown
from daemon.speechkit import v3
from daemon.steps.context import DUPLICATE_WAIT_SECONDS, Context
from daemon.steps.finish import REUSABLE_SECONDS, Finish, read_result
from daemon.steps.setbacks import Setbacks, Step

log = logging.getLogger(__name__)
HASH_BLOCK_BYTES = 1024 * 1024  # large reads keep hashing near disk speed
# From this size the hash runs beside the check: a 1 GiB recording takes 0.8 s to hash and 0.3 s
# to walk its Ogg pages (or far longer to convert), and hashlib lets go of the GIL. A thread
# costs about 0.3 ms; small files, the bulk of a burst, keep their CPU per file as it was.
HASH_BESIDE_CHECK_BYTES = 32 * 1024 * 1024


def sha256_file(path: Path, stop: threading.Event | None = None) -> str:
    """The sha256 of the file's bytes; "" if `stop` was set before the end (no longer wanted)."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while block := stream.read(HASH_BLOCK_BYTES):
            if stop is not None and stop.is_set():
                return ""
            digest.update(block)
    return digest.hexdigest()


def checked_and_hashed(
    path: Path, size: int, work_dir: Path, row_id: int
) -> tuple[audio.PreparedAudio, str]:
    """The check (or conversion) of the recording, and the sha256 of its bytes: one after the
    other for a small file, at the same time for a large one. The check's refusal comes first
    either way (a large file's hash then stops within a block)."""
    if size < HASH_BESIDE_CHECK_BYTES:
        return audio.prepare(path, work_dir, str(row_id)), sha256_file(path)
    stop = threading.Event()
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="hash") as hashing:
        digest = hashing.submit(sha256_file, path, stop)
        try:
            info = audio.prepare(path, work_dir, str(row_id))
        except BaseException:
            stop.set()  # refused, unreadable or gone: the hash is not wanted
            raise
        return info, digest.result()


def _said(error: OSError) -> str:
    """An OSError as a person reads it: "permission denied"."""
    return (error.strerror or str(error)).lower()


class Prepare(Step):
    """QUEUED: checks, hashes and reuses, then claims the upload."""

    def __init__(self, context: Context, setbacks: Setbacks, finishing: Finish) -> None:
        super().__init__(context, setbacks)
        self.finishing = finishing

    def prepare(self, row: state.FileRow) -> bool:
        moving_on = self._prepare(row)
        if not moving_on:
            # Not uploading now (failed, reused, adopted, waiting for a twin): a conversion is
            # not kept around; the upload step converts again if it ever needs one.
            audio.discard(self.context.work_dir, str(row.id))
            self.context.forget_as_is(row.id)
        return moving_on

    def _prepare(self, row: state.FileRow) -> bool:
        path = Path(row.path)
        if not self.setbacks.unchanged(row):
            return False
        if row.sha256 is None or row.duration_seconds is None:
            # First visit: check and hash. A row waiting for a twin keeps what it learned.
            row = self._name_outputs(row)
            try:
                info, digest = checked_and_hashed(path, row.size, self.context.work_dir, row.id)
            except audio.AudioRefused as refusal:
                self.setbacks.fail(
                    row, "check", refusal.reason, expect=state.QUEUED, code=refusal.code
                )
                return False
            except PermissionError as error:
                return self.setbacks.unreadable(row, f"{lifecycle.UNREADABLE} {_said(error)}")
            except OSError as error:
                return self.setbacks.vanished_or_retry(
                    row, state.QUEUED, f"cannot read: {error.strerror}"
                )
            if not self.setbacks.unchanged(row):
                return False
            if not info.converted:
                self.context.remember_as_is(row)
            if self.objects is None:
                too_big = v3.inline_refusal(info.upload_path.stat().st_size)
                if too_big is not None:
                    self.setbacks.fail(
                        row, "check", too_big, expect=state.QUEUED, code="too_big_inline"
                    )
                    return False
            change = lifecycle.hashed(
                digest, info.duration_seconds, info.channels,
                json.dumps(self.context.specification(row, info.channels), sort_keys=True),
                was_unreadable=(row.message or "").startswith(lifecycle.UNREADABLE),
            )  # fmt: skip
            now = self.clock()
            if not self.store.apply(row, change, now):
                return False  # it moved on meanwhile (a newer version): nothing to do here
            crash_point("after_hash")
            # The row as written (it was QUEUED as read, and only this step changes it now).
            row = replace(row, **change.fields, updated_at=now)
            log.info(
                "accepted %s: %.1f s, %d channel(s), sha256 %s%s",
                shown(path), info.duration_seconds, info.channels, digest[:12],
                ", converted to Ogg Opus" if info.converted else "",
            )  # fmt: skip
            if self._adopt(row):
                return False
        else:
            refitted = self.context.refit(row)
            if refitted is None:
                return False
            row = refitted
        assert row.sha256 is not None  # noqa: S101 - set just above
        assert row.specification is not None  # noqa: S101 - set with it
        reused = self._reuse(row, row.sha256, row.specification)
        if reused is not None:
            return reused
        now = self.clock()
        if self.store.claim_upload(row.id, self.context.key_for(row.sha256), now):
            return True
        # A twin was hashed at the same moment and won: reuse its operation once it has one.
        self.store.update(row.id, now, expect=state.QUEUED, due_at=now + DUPLICATE_WAIT_SECONDS)
        return False

    def _reuse(self, row: state.FileRow, digest: str, specification: str) -> bool | None:
        """Same bytes and settings seen before: reuse that result or operation, not pay again.

        None when there is nothing to reuse; else what `prepare` returns.
        """
        now = self.clock()
        for other in self.store.same_content(digest, specification, exclude=row.id):
            if other.operation_id is None:
                # The twin is uploading or submitting: wait for its operation id.
                self.store.update(
                    row.id, now, expect=state.QUEUED, due_at=now + DUPLICATE_WAIT_SECONDS
                )
                return False
            if other.state == state.DONE:
                saved = self.finishing.saved_result(other)
                if saved is not None:
                    assert other.operation_id is not None  # noqa: S101 - checked above
                    reused = lifecycle.reused_operation(
                        other.operation_id, other.submitted_at, other.id, due_at=now
                    )
                    if self.store.apply(row, reused, now):
                        log.info(
                            "%s has the same content as %s: reusing its result",
                            shown(row.path), shown(other.path),
                        )  # fmt: skip
                        self.finishing.finish(self.store.get(row.id), saved, 0, fetched=False)
                    return False
                if other.finished_at is None or now - other.finished_at > REUSABLE_SECONDS:
                    continue  # the service has forgotten it; transcribe afresh
                if self.config.speechkit.api == "v3":
                    continue  # v3 results are deleted from the service once saved
            log.info(
                "%s has the same content as %s: reusing its operation %s",
                shown(row.path), shown(other.path), other.operation_id,
            )  # fmt: skip
            # A finished twin's due_at is its retention time, not a status check.
            pending = other.state == state.PENDING and other.due_at is not None
            due_at = other.due_at if pending and other.due_at is not None else now
            # Recorded only if the twin is still as read, in the same statement: a twin that
            # finished meanwhile may have had its results deleted (v3 `Finish._forget`), and
            # this row would pay again for an operation unknown to the service. Either this row is
            # PENDING on the operation before the twin's DONE is written, and the twin's `_forget`
            # (which reads after that) leaves the results alone; or the twin's DONE came first,
            # nothing is recorded, and the next look takes the twin's saved result instead.
            if self.store.apply(
                row, lifecycle.reused_operation(other.operation_id, other.submitted_at, other.id,
                                                due_at), now, twin=other,
            ):  # fmt: skip
                return True
            return self.store.get(row.id).state == state.QUEUED  # the twin moved on: look again
        return None

    def _name_outputs(self, row: state.FileRow) -> state.FileRow:
        """Outputs are named after the audio's stem, unless an earlier file of the same stem in
        the same folder has those names (`call.wav`, then `call.mp3`): then after its whole name
        (`call.mp3.txt`), so that neither overwrites the other's transcript. Decided once."""
        if row.output_name is not None:
            return row
        path = Path(row.path)
        if not self.store.stem_taken(row, layout.stem(path)):
            return row
        self.store.update(row.id, self.clock(), expect=state.QUEUED, output_name=path.name)
        log.info(
            "%s shares its name with an earlier file in its folder; its outputs are named %s",
            shown(path), shown(layout.output_path(path, path.parent, "txt", path.name).name),
        )  # fmt: skip
        return replace(row, output_name=path.name)

    def _adopt(self, row: state.FileRow) -> bool:
        """Record as done a file the state file knows nothing else of, whose complete outputs
        already lie beside it, newer than the audio: its transcript exists, so it is not paid
        for again. This is how a daemon whose state file was lost carries on."""
        if self.store.versions_of(row.path) != 1:
            return False  # a file with a history here is judged by it, not by what lies around
        audio = Path(row.path)
        written = [layout.row_output(self.config, row, name) for name in self.config.outputs]
        try:
            if any(path.stat().st_mtime_ns < row.mtime_ns for path in written):
                return False
        except OSError:
            return False  # an output is missing
        result = read_result(layout.row_output(self.config, row, "json"))
        if result is None:
            return False
        operation_id = render.result_id(result)
        now = self.clock()
        if self.store.apply(row, lifecycle.adopted(operation_id, now), now):
            log.info(
                "adopted %s as done: its outputs, newer than the audio, are already there "
                "(operation %s); it is not transcribed or paid for again",
                shown(audio), operation_id,
            )  # fmt: skip
        return True
