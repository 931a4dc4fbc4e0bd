"""UPLOADING: the bytes of a file version (or of its conversion) go up to Object Storage under
their content's key, shortly before the submission quota lets the file go; large ones show their
progress."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from daemon import audio, lifecycle, metrics, state
from daemon.crashpoints import crash_point
from daemon.logs import shown
from daemon.outcomes import Service
from daemon.steps.context import DUPLICATE_WAIT_SECONDS
from daemon.steps.prepare import sha256_file
from daemon.steps.setbacks import Step
from daemon.storage import ContentChangedError, StorageError

log = logging.getLogger(__name__)
progress_log = logging.getLogger("daemon.progress")  # `transcribe` shows it on a terminal too
# Uploads of at least this much (multipart) log their progress every tenth.
UPLOAD_PROGRESS_MIN_BYTES = 16 * 1024 * 1024
STORAGE = Service.STORAGE


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


class Upload(Step):
    """UPLOADING: puts the object, then records it uploaded."""

    def upload(self, row: state.FileRow) -> bool:
        refitted = self.context.refit(row)
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
        if not self.setbacks.may_call(row, STORAGE) or not self._submission_near(row):
            return False
        try:
            return self._upload(row, path, row.object_key)
        finally:
            self.gate.uploaded(row.id)

    def bytes_to_send(
        self, row: state.FileRow, path: Path, expect: str = state.UPLOADING
    ) -> tuple[Path, int, str] | None:
        """The bytes to upload for `row`: the recording itself (Ogg Opus), or its conversion,
        converted again if a restart emptied the work folder. The object key stays the source's
        content hash either way; the size and hash checked on upload are the uploaded bytes'."""
        assert row.sha256 is not None  # noqa: S101 - set by prepare
        if self.context.take_as_is(row):
            return path, row.size, row.sha256  # checked by prepare in this run, unchanged since
        try:
            prepared = audio.prepare(path, self.context.work_dir, str(row.id))
            if not prepared.converted:
                return path, row.size, row.sha256
            upload_path = prepared.upload_path
            return upload_path, upload_path.stat().st_size, sha256_file(upload_path)
        except audio.AudioRefused as refusal:
            self.setbacks.fail(row, "check", refusal.reason, expect=expect, code=refusal.code)
        except FileNotFoundError:
            self.setbacks.vanished_or_retry(row, expect, "file disappeared")
        except OSError as error:
            self.setbacks.transient(row, "upload", f"cannot read: {error.strerror}")
        return None

    def _upload(self, row: state.FileRow, path: Path, key: str) -> bool:
        assert self.objects is not None  # noqa: S101 - without storage nothing is uploaded
        chosen = self.bytes_to_send(row, path)
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
                if self.context.uploads is not None:
                    self.context.uploads.finish(row.id)
        except ContentChangedError as changed:
            return self._changed_while_uploading(row, changed)
        except StorageError as error:
            metrics.error(error.service, error.kind)
            return self.setbacks.transient(row, "upload", error)
        except FileNotFoundError:
            return self.setbacks.vanished_or_retry(row, state.UPLOADING, "file disappeared")
        except OSError as error:
            return self.setbacks.transient(row, "upload", f"cannot read: {error.strerror}")
        crash_point("after_upload")
        if upload_path != path:  # up: the conversion is not needed again
            audio.discard(self.context.work_dir, str(row.id))
        self.gate.credentials_accepted(STORAGE)
        if not self.setbacks.unchanged(row, object_written=True):
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
        board = self.context.uploads
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
        if not self.setbacks.unchanged(row):
            return False  # a new size or time: a new version, judged from the start
        # The same size and time with other bytes (rewritten in place): hash this version again
        # once the writer has had time to finish.
        now = self.clock()
        wait = max(self.config.settle_seconds, DUPLICATE_WAIT_SECONDS)
        self.store.apply(row, lifecycle.rewritten_while_uploading(now, wait), now)
        return False
