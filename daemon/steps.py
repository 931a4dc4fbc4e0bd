"""The steps of one file version, from a settled file to its transcript: each calls an adapter.

Each step reads the row, does one piece of I/O and records the outcome in the state store before
the next begins: QUEUED (check, hash) -> UPLOADING (put object) -> SUBMITTING (recorded before the
POST) -> PENDING (operation id committed) -> DONE or FAILED. A crash at any point leaves a row
whose state says which step to redo; every step is safe to redo except the submit POST, whose
lost answer is the one documented gap (see README "Crash safety").
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from daemon import (
    audio,
    layout,
    lifecycle,
    logs,
    metrics,
    render,
    scheduling,
    speechkit,
    state,
    uploads,
    webhooks,
)
from daemon.aftercare import Aftercare
from daemon.config import Config, WatchFolder
from daemon.crashpoints import crash_point
from daemon.gate import (
    CHECK_CALL,
    OPERATIONS_URL,
    RECOGNIZE_URL,
    STT_V3_URL,
    SUBMIT_CALL,
    Gate,
)
from daemon.logs import shown
from daemon.outcomes import Failure, Kind, Service
from daemon.render import files, transcripts
from daemon.speechkit import backends, v3
from daemon.storage import INLINE_KEY_PREFIX, ContentChangedError, ObjectStore, StorageError

log = logging.getLogger(__name__)
progress_log = logging.getLogger("daemon.progress")  # `transcribe` shows it on a terminal too
# Uploads of at least this much (multipart) log their progress every tenth.
UPLOAD_PROGRESS_MIN_BYTES = 16 * 1024 * 1024

HASH_BLOCK_BYTES = 1024 * 1024  # large reads keep hashing near disk speed
RESULT_RETENTION_SECONDS = 3 * 86400  # the service forgets results 3 days after completion
RETENTION_MARGIN_SECONDS = 3600  # resubmit a little before the service would answer 404
DUPLICATE_WAIT_SECONDS = 2.0  # a twin being uploaded gets its operation id within seconds
RECOGNITION, STORAGE = Service.RECOGNITION, Service.STORAGE
# Operation errors that are the service's own trouble (google.rpc.Code): DEADLINE_EXCEEDED,
# RESOURCE_EXHAUSTED, ABORTED, INTERNAL, UNAVAILABLE. Submitted again; other codes fail the file.
RETRYABLE_OPERATION_CODES = frozenset({4, 8, 10, 13, 14})
# A done operation whose answer is no well-formed result (transcripts.result_problem) is checked
# again with backoff, in case a proxy or the service garbled one answer; this many malformed
# answers in a row fail the file, never an empty transcript indistinguishable from silence.
MALFORMED_RESULT_CHECKS = 3
_REUSABLE_SECONDS = RESULT_RETENTION_SECONDS - RETENTION_MARGIN_SECONDS


def _read_result(saved: Path) -> dict[str, Any] | None:
    """A finished result (either API's) saved as NAME.json, or None if it is missing or not one."""
    try:
        result = json.loads(saved.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if (
        isinstance(result, dict)
        and isinstance(render.result_id(result), str)
        and render.result_problem(result) is None  # well-formed, of the API that wrote it
    ):
        return result
    return None


class UploadProgress:
    """Logs how far a large upload has got, every tenth of it, with its rate: an hour-long upload
    on a slow line must not look stuck (`progress` logger: `transcribe` shows it too)."""

    def __init__(
        self,
        path: Path,
        size: int,
        monotonic: Callable[[], float],
        publish: Callable[[int, int, float], None] | None = None,
    ) -> None:
        self.path, self.size, self.monotonic = path, size, monotonic
        self.publish = publish  # (sent, size, bytes per second): `status` shows it
        self.started = monotonic()
        self.sent = 0
        self.reported = 0  # tenths already logged
        self._lock = threading.Lock()

    def __call__(self, count: int) -> None:
        with self._lock:
            self.sent += count
            seconds = max(1e-6, self.monotonic() - self.started)
            if self.publish is not None:
                self.publish(self.sent, self.size, self.sent / seconds)
            tenths = min(10, self.sent * 10 // max(1, self.size))
            if tenths <= self.reported:
                return
            self.reported = tenths
        progress_log.info(
            "uploading %s: %d%% of %.1f MB, %.1f MB/s",
            shown(self.path), tenths * 10, self.size / 1e6, self.sent / 1e6 / seconds,
        )  # fmt: skip


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while block := stream.read(HASH_BLOCK_BYTES):
            digest.update(block)
    return digest.hexdigest()


class Steps:
    """Advances file versions one step at a time; safe to call from several worker threads."""

    def __init__(
        self,
        config: Config,
        store: state.Store,
        objects: ObjectStore | None,
        api: speechkit.Backend,
        *,
        clock: Callable[[], float],
        rng: random.Random,
        stopping: threading.Event,
        on_changed: Callable[[str], None],
        other_api: Callable[[str], speechkit.Backend] | None = None,
    ) -> None:
        self.gate = Gate(config, store, clock)
        self.aftercare = Aftercare(config, store, objects, clock=clock, stopping=stopping)
        self.config = config
        self.store = store
        self.objects = objects  # None: no storage, the audio goes inline (API v3)
        self.api = api  # the configured API's (`speechkit.api`)
        # The other API's backend, for operations submitted before `speechkit.api` changed.
        self.other_api = other_api
        self.clock = clock
        self.rng = rng
        self.stopping = stopping
        self.on_changed = on_changed  # a file changed under us: look at it again
        # Conversions to Ogg Opus wait here for their upload (emptied at start).
        self.work_dir = audio.work_dir_for(config.state_file)
        self._lock = threading.Lock()
        # Row id -> (operation id, submitted at) accepted by the service while the state file
        # could not be written: written before anything else, never submitted again.
        self.unwritten_operations: dict[int, tuple[str, float]] = {}
        # Learned from finished operations: how much slower than documented the service is now.
        self.speed_factor = 1.0
        # Malformed answers in a row per row id. In memory: after a restart the count starts
        # again, which costs at most MALFORMED_RESULT_CHECKS more status checks.
        self._malformed: dict[int, int] = {}
        # Row id -> (size, mtime_ns) of a version `prepare` found to go up as it is (Ogg Opus
        # within the limits): its upload step need not read the file's pages again. In memory:
        # after a restart the upload step checks once more; a changed file is caught by the size
        # and time, and its bytes by the hash checked as they go up.
        self._as_is: dict[int, tuple[int, int]] = {}
        # The daemon deletes finished files' objects in batches (its loop sends them); a
        # one-shot `transcribe` deletes each at once.
        self.delete_in_batches = False
        self.uploads: uploads.Board | None = None  # the daemon shows uploads to `status`
        # Called after a file's end put webhook events in the outbox (the daemon's deliverer).
        self.events_ready: Callable[[], None] = lambda: None

    @property
    def config(self) -> Config:
        return self._config

    @config.setter
    def config(self, settings: Config) -> None:
        """A reload: new files, the gate and what follows a file's end use the new settings."""
        self._config = settings
        self.gate.config = settings
        self.gate.set_limits(settings.quota)
        self.aftercare.config = settings

    def seconds_per_minute(self) -> float:
        """Expected processing time per audio minute and channel: configured x learned."""
        with self._lock:
            return self.config.polling.seconds_per_minute * self.speed_factor

    def _learn(self, row: state.FileRow, operation: Mapping[str, Any]) -> None:
        observation = scheduling.observed_speed_factor(
            operation, row.duration_seconds or 0.0, row.channels or 1,
            self.config.polling.seconds_per_minute,
        )  # fmt: skip
        with self._lock:
            self.speed_factor = scheduling.learn(self.speed_factor, observation)

    # -- entry point -------------------------------------------------------------------------

    def advance(self, row_id: int) -> None:
        """Run the due step of a row, then the following ones while there is no reason to wait."""
        while not self.stopping.is_set():
            row = self.store.get(row_id)
            step = {
                state.QUEUED: self.prepare,
                state.UPLOADING: self.upload,
                state.SUBMITTING: self.submit,
                state.PENDING: self.check,
            }.get(row.state)
            if step is None or (row.due_at is not None and row.due_at > self.clock()):
                return
            if not step(row):
                return

    # -- steps (each returns True when the next step may run at once) ----------------------------

    def prepare(self, row: state.FileRow) -> bool:
        moving_on = self._prepare(row)
        if not moving_on:
            # Not uploading now (failed, reused, adopted, waiting for a twin): a conversion is
            # not kept around; the upload step converts again if it ever needs one.
            audio.discard(self.work_dir, str(row.id))
            with self._lock:
                self._as_is.pop(row.id, None)
        return moving_on

    def _prepare(self, row: state.FileRow) -> bool:
        path = Path(row.path)
        if not self._unchanged(row):
            return False
        if row.sha256 is None or row.duration_seconds is None:
            # First visit: check and hash. A row waiting for a twin keeps what it learned.
            row = self._name_outputs(row)
            try:
                info = audio.prepare(path, self.work_dir, str(row.id))
                digest = sha256_file(path)
            except audio.AudioRefused as refusal:
                self.fail(row, "check", refusal.reason, expect=state.QUEUED, code=refusal.code)
                return False
            except PermissionError as error:
                return self._unreadable(row, f"{lifecycle.UNREADABLE} {_said(error)}")
            except OSError as error:
                return self._vanished_or_retry(row, state.QUEUED, f"cannot read: {error.strerror}")
            if not self._unchanged(row):
                return False
            if not info.converted:
                with self._lock:
                    self._as_is[row.id] = (row.size, row.mtime_ns)
            if self.objects is None:
                too_big = v3.inline_refusal(info.upload_path.stat().st_size)
                if too_big is not None:
                    self.fail(row, "check", too_big, expect=state.QUEUED, code="too_big_inline")
                    return False
            change = lifecycle.hashed(
                digest, info.duration_seconds, info.channels,
                json.dumps(self._specification(row, info.channels), sort_keys=True),
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
            refitted = self._refit(row)
            if refitted is None:
                return False
            row = refitted
        assert row.sha256 is not None  # noqa: S101 - set just above
        assert row.specification is not None  # noqa: S101 - set with it
        reused = self._reuse(row, row.sha256, row.specification)
        if reused is not None:
            return reused
        now = self.clock()
        if self.store.claim_upload(row.id, self._key_for(row.sha256), now):
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
                saved = self._saved_result(other)
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
                        self.finish(self.store.get(row.id), saved, 0, fetched=False)
                    return False
                if other.finished_at is None or now - other.finished_at > _REUSABLE_SECONDS:
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
            # finished meanwhile may have had its results deleted (v3 `_forget`), and this row
            # would pay again for an operation unknown to the service. Either this row is PENDING
            # on the operation before the twin's DONE is written, and the twin's `_forget`
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

    def _saved_result(self, row: state.FileRow) -> dict[str, Any] | None:
        """The finished operation saved beside an earlier file, if it is still there intact."""
        result = _read_result(layout.row_output(self.config, row, "json"))
        if result is not None and render.result_id(result) == row.operation_id:
            return result
        return None

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
        result = _read_result(layout.row_output(self.config, row, "json"))
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

    def upload(self, row: state.FileRow) -> bool:
        refitted = self._refit(row)
        if refitted is None:
            return False
        row = refitted
        assert row.object_key is not None  # noqa: S101 - set by prepare
        assert row.sha256 is not None  # noqa: S101 - set by prepare
        path = Path(row.path)
        if self.objects is None:
            # No storage: the audio goes inline with the submission, which reads it then.
            now = self.clock()
            return self.store.apply(row, lifecycle.uploaded(now), now)
        if not self._may_call(row, STORAGE) or not self._submission_near(row):
            return False
        try:
            return self._upload(row, path, row.object_key)
        finally:
            self.gate.uploaded(row.id)

    def _upload_file(
        self, row: state.FileRow, path: Path, expect: str = state.UPLOADING
    ) -> tuple[Path, int, str] | None:
        """The bytes to upload for `row`: the recording itself (Ogg Opus), or its conversion,
        converted again if a restart emptied the work folder. The object key stays the source's
        content hash either way; the size and hash checked on upload are the uploaded bytes'."""
        assert row.sha256 is not None  # noqa: S101 - set by prepare
        with self._lock:
            as_is = self._as_is.pop(row.id, None)
        if as_is == (row.size, row.mtime_ns):
            return path, row.size, row.sha256  # checked by prepare in this run, unchanged since
        try:
            prepared = audio.prepare(path, self.work_dir, str(row.id))
            if not prepared.converted:
                return path, row.size, row.sha256
            upload_path = prepared.upload_path
            return upload_path, upload_path.stat().st_size, sha256_file(upload_path)
        except audio.AudioRefused as refusal:
            self.fail(row, "check", refusal.reason, expect=expect, code=refusal.code)
        except FileNotFoundError:
            self._vanished_or_retry(row, expect, "file disappeared")
        except OSError as error:
            self._transient(row, "upload", f"cannot read: {error.strerror}")
        return None

    def _upload(self, row: state.FileRow, path: Path, key: str) -> bool:
        assert self.objects is not None  # noqa: S101 - without storage nothing is uploaded
        chosen = self._upload_file(row, path)
        if chosen is None:
            return False
        upload_path, size, upload_digest = chosen
        try:
            progress = (
                UploadProgress(path, size, time.monotonic, self._publisher(row.id))
                if size >= UPLOAD_PROGRESS_MIN_BYTES
                else None
            )
            try:
                uploaded = self.objects.upload(upload_path, key, size, upload_digest, progress)
            finally:
                if self.uploads is not None:
                    self.uploads.finish(row.id)
        except ContentChangedError as changed:
            return self._changed_while_uploading(row, changed)
        except StorageError as error:
            metrics.error(error.service, error.kind)
            return self._transient(row, "upload", error)
        except FileNotFoundError:
            return self._vanished_or_retry(row, state.UPLOADING, "file disappeared")
        except OSError as error:
            return self._transient(row, "upload", f"cannot read: {error.strerror}")
        crash_point("after_upload")
        if upload_path != path:
            audio.discard(self.work_dir, str(row.id))  # up: the conversion is not needed again
        self.gate.credentials_accepted(STORAGE)
        if not self._unchanged(row, object_written=True):
            return False
        if uploaded:
            metrics.uploaded(size)
            log.info("uploaded %s as %s", shown(path), key)
        now = self.clock()
        if self.store.apply(row, lifecycle.uploaded(now), now):
            return True
        # The row moved on while the object went up (a newer version, `retry`): unless another
        # file needs the same bytes, nothing will ever use this object.
        self.aftercare.delete_object(self.store.get(row.id))
        return False

    def _publisher(self, row_id: int) -> Callable[[int, int, float], None] | None:
        board = self.uploads
        if board is None:
            return None
        return lambda sent, size, rate: board.update(row_id, sent, size, rate)

    def _submission_near(self, row: state.FileRow) -> bool:
        """Upload only shortly before the submission quota can let the file go: a backlog waits
        on disk, not in the bucket (where it is billed and its links age)."""
        now = self.clock()
        wait = self.gate.upload_wait(row.id, now)
        if wait <= 0:
            return True
        self.store.apply(row, lifecycle.later(now, wait), now)
        return False

    def _changed_while_uploading(self, row: state.FileRow, changed: ContentChangedError) -> bool:
        """The bytes that went up are not the ones hashed: the object is gone again (or left for
        the sweep), and the file is judged afresh as the version it now is."""
        log.warning(
            "%s changed while it was uploading (the bytes sent hash to %s, not %s); the object "
            "%s%s and the file is read again",
            shown(row.path), changed.sent_sha256[:12], (row.sha256 or "")[:12], row.object_key,
            " is left for the sweep" if changed.left_behind else " was deleted",
        )  # fmt: skip
        if not self._unchanged(row):
            return False  # a new size or time: a new version, judged from the start
        # The same size and time with other bytes (rewritten in place): hash this version again
        # once the writer has had time to finish.
        now = self.clock()
        wait = max(self.config.settle_seconds, DUPLICATE_WAIT_SECONDS)
        self.store.apply(row, lifecycle.rewritten_while_uploading(now, wait), now)
        return False

    def submit(self, row: state.FileRow) -> bool:
        assert row.object_key is not None  # noqa: S101 - set by prepare
        kept = self.unwritten_operations.get(row.id)
        if kept is not None:  # accepted earlier, but the state file could not take its id then
            self._record_submission(row, kept)
            return False
        refitted = self._refit(row)
        if refitted is None:
            return True  # back to uploading: storage is configured now
        row = refitted
        assert row.object_key is not None  # noqa: S101 - set by prepare
        # The settings recorded when the file was accepted (a config reload affects new files).
        specification = (
            json.loads(row.specification)
            if row.specification
            else self._specification(row, row.channels or 1)
        )
        source: str | Path
        if self.objects is None:  # inline: the bytes checked and hashed (or their conversion)
            if not self._unchanged(row):
                return False
            chosen = self._upload_file(row, Path(row.path), state.SUBMITTING)
            if chosen is None:
                return False
            source = chosen[0]
        else:
            try:
                source = self.objects.audio_uri(row.object_key)
            except StorageError as error:
                metrics.error(error.service, error.kind)
                return self._transient(row, "submit", error)
        if self._submission_cap_reached(row, "submit"):
            return False
        if not self.store.has_room():
            # The service's answer must be written at once, or a restart pays for it again.
            raise state.StateWriteError(
                f"{self.store.path}: less than {state.MIN_FREE_BYTES // 1024} KiB free beside the "
                "state file; nothing is submitted until there is room"
            )
        if not self._may_call(row, (RECOGNITION, self._submit_url()[0]), SUBMIT_CALL):
            return False
        crash_point("before_submit")
        try:
            operation_id = self.api.submit(source, specification)
        except Failure as error:
            metrics.error(error.service, error.kind)
            return self._submit_failed(row, error)
        crash_point("after_submit")
        self._record_submission(row, (operation_id, self.clock()))
        if self.objects is None:
            audio.discard(self.work_dir, str(row.id))  # sent inline: not needed again
        return False

    def _record_submission(self, row: state.FileRow, accepted: tuple[str, float]) -> None:
        """Commit the operation id the service returned. If the state file cannot take it now,
        keep it in memory (never submit again for it) and write it once the file can."""
        operation_id, submitted_at = accepted
        delay = scheduling.first_check_delay(
            row.duration_seconds or 0.0, row.channels or 1, self.seconds_per_minute()
        )
        try:
            self.store.apply(
                row, lifecycle.submitted(row, operation_id, submitted_at, delay), self.clock()
            )
        except state.StateWriteError:
            if row.id not in self.unwritten_operations:
                log.error(
                    "operation %s of %s was accepted but cannot be recorded yet; it is kept in "
                    "memory and written as soon as the state file takes it",
                    operation_id, shown(row.path),
                )  # fmt: skip
            self.unwritten_operations[row.id] = accepted
            raise
        self.unwritten_operations.pop(row.id, None)
        crash_point("after_commit")
        self.gate.credentials_accepted(RECOGNITION)
        self.gate.url_answers(self._submit_url()[0])
        again = f" (submission {row.submissions + 1} of at most {lifecycle.MAX_SUBMISSIONS})"
        log.info(
            "submitted %s: operation %s, first status check in %.1f s%s",
            shown(row.path), operation_id, delay, again if row.submissions else "",
        )  # fmt: skip

    def write_unwritten_operations(self) -> None:
        """Operation ids the state file could not take when they came: write them now."""
        for row_id in list(self.unwritten_operations):
            self._record_submission(self.store.get(row_id), self.unwritten_operations[row_id])

    def check(self, row: state.FileRow) -> bool:
        assert row.operation_id is not None  # noqa: S101 - set by submit
        now = self.clock()
        if row.submitted_at is not None and now - row.submitted_at > (
            RESULT_RETENTION_SECONDS - RETENTION_MARGIN_SECONDS
        ):
            return self._resubmit(
                row, f"operation {row.operation_id} is older than the service keeps results"
            )
        if not self._may_call(row, (RECOGNITION, OPERATIONS_URL), CHECK_CALL):
            return False
        backend = self._backend(row)  # the API that accepted it reads it
        try:
            status = backend.status(row.operation_id)
        except Failure as error:
            metrics.error(error.service, error.kind)
            if error.kind == Kind.NOT_FOUND:
                return self._resubmit(
                    row, f"operation {row.operation_id} is unknown to the service (expired?)"
                )
            if error.kind == Kind.NOT_THE_API:
                name, url = self._check_url(error)
                return self._not_the_api(row, name, url, "status checks", error)
            return self._transient(row, "status check", error)
        self.gate.credentials_accepted(RECOGNITION)
        self.gate.url_answers(OPERATIONS_URL)
        if isinstance(status, speechkit.Finished) and self._row_api(row) == "v3":
            self.gate.url_answers(STT_V3_URL)  # its getRecognition answered too
        checks = row.checks + 1
        if isinstance(status, speechkit.Running):
            delay = scheduling.later_check_delay(
                checks, row.duration_seconds or 0.0, row.channels or 1,
                self.seconds_per_minute(), self.config.polling.max_interval_seconds,
            )  # fmt: skip
            self.store.apply(row, lifecycle.checked(row, now, delay), now)
            log.debug("operation %s not done yet; next check in %.1f s", row.operation_id, delay)
            return False
        if row.duplicate_of is None:
            self._learn(row, render.operation_of(status.operation))
        with self._lock:  # this answer's place in a streak of malformed ones
            malformed = self._malformed.pop(row.id, 0) + 1
        if isinstance(status, speechkit.Failed):
            self.store.update(row.id, now, expect=state.PENDING, checks=checks)
            if status.code in RETRYABLE_OPERATION_CODES:
                return self._resubmit(
                    self.store.get(row.id),
                    f"operation {row.operation_id} ended with the service's own error "
                    f"(code {status.code}: {status.message})",
                    delay=scheduling.retry_delay(row.submissions, self.rng),
                    code=status.code,
                )
            self.fail(
                row, "recognition",
                f"the service could not recognise the audio: {status.message}",
                expect=state.PENDING, code=status.code, operation_id=row.operation_id,
            )  # fmt: skip
            return False
        if isinstance(status, speechkit.Finished):
            specification = json.loads(row.specification) if row.specification else {}
            return self.finish(row, backend.result(status, specification), checks)
        reason = f"the service answered with a malformed result: {status.problem}"
        if malformed >= MALFORMED_RESULT_CHECKS:
            self.fail(
                row, "recognition",
                f"{reason} ({malformed} status checks in a row); no transcript was written: "
                "`speechkit-watch retry` the file to submit it again",
                expect=state.PENDING, operation_id=row.operation_id,
            )  # fmt: skip
            return False
        with self._lock:
            self._malformed[row.id] = malformed
        delay = scheduling.retry_delay(malformed, self.rng)
        log.warning(
            "%s (operation %s of %s); checking again in %.1f s (answer %d of at most %d)",
            reason, row.operation_id, shown(row.path), delay, malformed, MALFORMED_RESULT_CHECKS,
        )  # fmt: skip
        self.store.apply(row, lifecycle.later(now, delay, checks=checks, attempts=malformed), now)
        return False

    def _resubmit(
        self, row: state.FileRow, why: str, *, delay: float = 0.0, code: int | None = None
    ) -> bool:
        """Submit again with a fresh link (upload first: the object may have been deleted),
        unless this file version has been submitted lifecycle.MAX_SUBMISSIONS times already."""
        digest = row.sha256
        assert digest is not None  # noqa: S101 - a pending row was hashed
        if self._submission_cap_reached(row, "recognition", why, code):
            return False
        now = self.clock()
        log.warning("%s of %s; submitting again in %.0f s (submission %d of at most %d)",
                    why, shown(row.path), delay, row.submissions + 1,
                    lifecycle.MAX_SUBMISSIONS)  # fmt: skip
        change = lifecycle.submit_again(why, now, delay, self._key_for(digest), code)
        return self.store.apply(row, change, now)

    def _submission_cap_reached(
        self, row: state.FileRow, stage: str, why: str | None = None, code: int | None = None
    ) -> bool:
        """Fail the row instead of paying once more when it has been submitted often enough."""
        reason = lifecycle.submission_refused(row, why)
        if reason is None:
            return False
        self.fail(row, stage, reason, expect=row.state,
                  code=code if why is not None else row.error_code,
                  operation_id=row.operation_id)  # fmt: skip
        return True

    def _not_the_api(
        self, row: state.FileRow, name: str, url: str, calls: str, error: Failure
    ) -> bool:
        """Something other than the API answered at `url`: pause those calls, keep the row."""
        now = self.clock()
        until = now + self.config.auth_retry_seconds
        self.gate.not_the_api(name, url, calls, error, until)
        self.store.apply(row, lifecycle.later(until, 0.0), now)
        return False

    def finish(
        self, row: state.FileRow, operation: dict[str, Any], checks: int, *, fetched: bool = True
    ) -> bool:
        """Write the outputs, then record DONE, then remove the results from the service (v3:
        unless they came from an earlier file's saved result) and delete the object."""
        audio = Path(row.path)
        out_dir = self.output_dir(row)
        documents = {
            layout.row_output(self.config, row, extension): text
            for extension, text in render.documents(operation, self.config.outputs).items()
        }
        now = self.clock()
        try:
            crash_point("before_outputs")
            files.write_all(documents)
            files.remove(layout.row_error(self.config, row))
        except OSError as error:
            # Full disk, read-only or missing folder: the result stays with the service (3 days),
            # so keep the file pending and fetch it again later. Nothing is marked done.
            attempts = row.attempts + 1
            delay = scheduling.retry_delay(attempts, self.rng)
            log.error(
                "cannot write the transcript of %s into %s: %s; trying again in %.0f s",
                shown(audio), shown(out_dir), error.strerror or error, delay,
            )  # fmt: skip
            self.store.update(
                row.id, now, expect=state.PENDING, checks=checks, attempts=attempts,
                due_at=now + delay,
            )  # fmt: skip
            return False
        crash_point("after_outputs")
        events = webhooks.deliveries_for(self.config, row, "done", now)
        done = lifecycle.finished(
            now, checks, hook=self.config.on_complete is not None,
            retain_at=self.aftercare.due_at(row, state.DONE, now),
        )  # fmt: skip
        finished = self.store.apply(row, done, now, outbox=events)
        if finished:
            metrics.file_ended("done", now - row.created_at)
            if events:
                self.events_ready()
            lines = render.line_count(operation)  # one .txt line per chunk or utterance
            log.info(
                "done %s: operation %s, %d line(s), %d status check(s)",
                shown(audio), row.operation_id, lines, checks,
            )  # fmt: skip
            crash_point("before_forget")
            if fetched:
                self._forget(row)
            crash_point("before_delete")
            if self.delete_in_batches:
                self.aftercare.delete_object_soon(row)
            else:
                self.aftercare.delete_object(row)
            self.aftercare.after_end(replace(row, state=state.DONE, **done.fields))
        return False

    def _forget(self, row: state.FileRow) -> None:
        """Remove the results from the service (v3) once saved, unless another version with the
        same content still waits for the same operation's result."""
        if row.operation_id is None:
            return
        # Read after this row's DONE was written: a twin that reuses the operation is PENDING on
        # it by now, or will not reuse it (`_reuse` records that only while this row is PENDING).
        if self.store.operation_awaited(row.operation_id, exclude=row.id):
            return
        self._backend(row).forget(row.operation_id)

    # -- outcomes ------------------------------------------------------------------------------

    def fail(
        self,
        row: state.FileRow,
        stage: str,
        message: str,
        *,
        expect: str,
        code: Any = None,
        operation_id: str | None = None,
    ) -> None:
        """A permanent problem with this file: NAME.error.json and the FAILED state."""
        audio = Path(row.path)
        now = self.clock()
        document = transcripts.render_error(
            file=str(audio), stage=stage, message=message, at=transcripts.iso_time(now),
            extra={"code": code, "operation_id": operation_id},
        )  # fmt: skip
        try:
            files.write_all({layout.row_error(self.config, row): document})
        except OSError as error:
            log.error("cannot write the error file of %s: %s", shown(audio), error.strerror)
        change = lifecycle.failed(
            now, stage, message, code, hook=self.config.on_complete is not None,
            retain_at=self.aftercare.due_at(row, state.FAILED, now),
        )  # fmt: skip
        events = webhooks.deliveries_for(
            self.config, row, "failed", now,
            error={"stage": stage, "message": message, "code": change.fields["error_code"]},
        )  # fmt: skip
        failed = self.store.apply(
            replace(row, state=state.State(expect)), change, now, outbox=events
        )
        if failed:
            metrics.file_ended("failed", now - row.created_at)
            if events:
                self.events_ready()
            log.error("failed %s at %s: %s", shown(audio), stage, message)
            if self.aftercare.deletes_object(row):
                self.aftercare.delete_object(self.store.get(row.id))
            # after_failed when it is due now, then the hook
            self.aftercare.after_end(replace(row, state=state.FAILED, **change.fields))

    def output_dir(self, row: state.FileRow) -> Path:
        """Where the outputs of a row are now (they follow the audio when it was moved)."""
        return layout.row_output_dir(self.config, row)

    def _submit_failed(self, row: state.FileRow, error: Failure) -> bool:
        if error.kind == Kind.NOT_THE_API:
            name, url = self._submit_url()
            return self._not_the_api(row, name, url, "submissions", error)
        if error.kind == Kind.PERMANENT:
            self.fail(
                row, "submit", f"the service refused the request: {error.message}",
                expect=state.SUBMITTING, code=error.code,
            )  # fmt: skip
            return False
        if error.kind == Kind.AMBIGUOUS:
            # No way to ask the v2 API which operations exist, so the choice is between losing the
            # file and maybe paying twice: we submit again, and say so.
            log.warning(
                "the answer to the submission of %s was lost (%s); it will be submitted again and "
                "may be billed twice",
                shown(row.path), error.message,
            )  # fmt: skip
            lost = lifecycle.submission_lost(
                row, f"the answer to a submission was lost ({error.message})"
            )
            self.store.apply(row, lost, self.clock())
            row = self.store.get(row.id)
        return self._transient(row, "submit", error)

    def _transient(self, row: state.FileRow, stage: str, failure: Failure | str) -> bool:
        """Try the step again later: after a backoff, or, when a service refused our
        credentials, once that service's pause ends (the failure names the service)."""
        now = self.clock()
        attempts = row.attempts + 1
        retry_after = failure.retry_after if isinstance(failure, Failure) else None
        if isinstance(failure, Failure) and failure.kind == Kind.AUTH:
            delay = max(self.config.auth_retry_seconds, retry_after or 0.0)
            self.gate.credentials_refused(failure, now + delay)
        else:
            delay = scheduling.retry_delay(attempts, self.rng, retry_after)
            log.warning(
                "%s of %s failed (%s); attempt %d, retrying in %.1f s",
                stage, shown(row.path), failure, attempts, delay,
            )  # fmt: skip
        self.store.apply(row, lifecycle.later(now, delay, attempts=attempts), now)
        return False

    def _may_call(
        self, row: state.FileRow, pauses: str | tuple[str, ...], call: str | None = None
    ) -> bool:
        """Whether a step may call a service now: none of its `pauses` holds, and the hourly
        quota allows it. If not, the row is rescheduled for when it may, without a request."""
        now = self.clock()
        blocked = self.gate.blocked_until((pauses,) if isinstance(pauses, str) else pauses, now)
        if blocked is not None:
            self.store.apply(row, lifecycle.later(blocked, 0.0), now)
            return False
        if call is None:
            return True
        wait = self.gate.take(call, now)
        if wait > 0:
            self.store.apply(row, lifecycle.later(now, wait), now)
            return False
        return True

    def _unreadable(self, row: state.FileRow, why: str) -> bool:
        """Permissions keep the daemon out: wait a bounded time for a person, then fail."""
        if not Path(row.path).exists():
            self._drop(row, state.QUEUED, "the file disappeared before it was transcribed")
            return False
        now = self.clock()
        backoff = scheduling.retry_delay(row.attempts + 1, self.rng)
        change = lifecycle.unreadable(row.created_at, row.attempts, now, why, backoff)
        if change is None:
            waited = logs.duration(now - row.created_at)
            self.fail(row, "check", f"{why} (waited {waited} for it to become readable)",
                      expect=state.QUEUED, code="unreadable")  # fmt: skip
            return False
        if row.attempts == 0:  # once: the row's reason is in `status` while it waits
            log.warning(
                "%s: %s; waiting up to %s for its owner or mode to be fixed, then it fails",
                shown(row.path), why, logs.duration(lifecycle.UNREADABLE_WAIT_SECONDS),
            )  # fmt: skip
        self.store.apply(row, change, now)
        return False

    def _vanished_or_retry(self, row: state.FileRow, expect: str, message: str) -> bool:
        if not Path(row.path).exists():
            self._drop(row, expect, "the file disappeared before it was transcribed")
            return False
        return self._transient(replace(row, state=state.State(expect)), "read", message)

    def _drop(self, row: state.FileRow, expect: str, why: str) -> None:
        if self.store.apply(
            replace(row, state=state.State(expect)), lifecycle.gone(why), self.clock()
        ):
            log.info("dropped %s: %s", shown(row.path), why)

    def _unchanged(self, row: state.FileRow, *, object_written: bool = False) -> bool:
        """True if the file is still the version this row describes; otherwise hand it back."""
        try:
            now_stat = os.stat(row.path)
        except FileNotFoundError:
            self._drop(row, row.state, "the file disappeared before it was transcribed")
            return False
        except OSError:
            return True  # a passing permission or I/O problem shows up in the read itself
        if (now_stat.st_size, now_stat.st_mtime_ns) == (row.size, row.mtime_ns):
            return True
        if self.store.apply(row, lifecycle.superseded(), self.clock()):
            log.info("%s changed while being processed; it will be judged again", shown(row.path))
            if object_written:
                self.aftercare.delete_object(self.store.get(row.id))
        self.on_changed(row.path)
        return False

    def _specification(self, row: state.FileRow, channels: int) -> dict[str, Any]:
        """The recognition settings of a row's request: its dedup key, recorded per row."""
        return self._folder(row).recognition.settings(self.config.speechkit.api, channels)

    def _row_api(self, row: state.FileRow) -> str:
        """The API a row's request is for, told by its recorded specification."""
        if not row.specification:
            return self.config.speechkit.api
        return backends.api_of(json.loads(row.specification))

    def _backend(self, row: state.FileRow) -> speechkit.Backend:
        """The backend of the API a row was submitted to: `speechkit.api` may have changed since,
        and each API misreads the other's operations."""
        api = self._row_api(row)
        if api == self.config.speechkit.api or self.other_api is None:
            return self.api
        return self.other_api(api)

    def _refit(self, row: state.FileRow) -> state.FileRow | None:
        """A row not submitted yet, recorded under another `speechkit.api` or with(out) storage:
        its specification is made again from the config of now (as `retry` does), its object key
        for the storage of now (`inline:<sha256>` without). One recorded without storage that
        was about to be submitted goes back to uploading: None (the caller moves on to it)."""
        fields: dict[str, Any] = {}
        if row.specification is not None and self._row_api(row) != self.config.speechkit.api:
            specification = self._specification(row, row.channels or 1)
            fields["specification"] = json.dumps(specification, sort_keys=True)
        key, digest = row.object_key, row.sha256
        inline = self.objects is None
        if key is not None and digest is not None and key.startswith(INLINE_KEY_PREFIX) != inline:
            fields["object_key"] = self._key_for(digest)
        if not fields:
            return row
        now = self.clock()
        log.info(
            "%s was recorded under other settings (%s); it goes on with those of now",
            shown(row.path),
            ", ".join(
                f"API {self._row_api(row)}" if name == "specification" else
                ("without storage" if self.objects is not None else "with storage")
                for name in fields
            ),
        )  # fmt: skip
        if row.state == state.SUBMITTING and self.objects is not None and "object_key" in fields:
            key = fields.pop("object_key")
            self.store.apply(row, lifecycle.upload_first(now, key, **fields), now)
            return None
        if not self.store.update(row.id, now, expect=row.state, **fields):
            return None  # it moved on meanwhile (a newer version, `retry`)
        return self.store.get(row.id)

    def _check_url(self, error: Failure) -> tuple[str, str]:
        """The config key and URL of a status check that something else answered: v3 reads a
        done operation's results under `speechkit.stt_v3_url`, the operation itself under
        `speechkit.operations_url`."""
        if getattr(error, "url_key", None) == STT_V3_URL:
            return STT_V3_URL, self.config.speechkit.stt_v3_url
        return OPERATIONS_URL, self.config.speechkit.operations_url

    def _submit_url(self) -> tuple[str, str]:
        """The config key and URL submissions go to (each paused on its own)."""
        settings = self.config.speechkit
        if settings.api == "v3":
            return STT_V3_URL, settings.stt_v3_url
        return RECOGNIZE_URL, settings.recognize_url

    def _key_for(self, digest: str) -> str:
        """The object key of some content; without storage, a name that no bucket holds."""
        if self.objects is None:
            return f"{INLINE_KEY_PREFIX}{digest}"
        return self.objects.key_for(digest)

    def _folder(self, row: state.FileRow) -> WatchFolder:
        return layout.folder_of(self.config, row.path, row.folder)


def _said(error: OSError) -> str:
    """An OSError as a person reads it: "permission denied"."""
    return (error.strerror or str(error)).lower()
