"""SUBMITTING: the recognition request, recorded before the POST; the operation id the service
returns is committed at once (kept in memory and written first if the state file cannot take it),
and an answer lost on the way is said to be paid for maybe twice."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from daemon import audio, lifecycle, metrics, scheduling, state
from daemon.crashpoints import crash_point
from daemon.gate import SUBMIT_CALL
from daemon.logs import shown
from daemon.outcomes import Failure, Kind, Service
from daemon.steps.context import Context
from daemon.steps.setbacks import Setbacks, Step
from daemon.steps.upload import Upload
from daemon.storage import StorageError

log = logging.getLogger(__name__)
RECOGNITION = Service.RECOGNITION


class Submit(Step):
    """SUBMITTING: sends the request and records the operation id."""

    def __init__(self, context: Context, setbacks: Setbacks, uploading: Upload) -> None:
        super().__init__(context, setbacks)
        # Without storage the bytes go inline: the upload step chooses them (as is, or converted).
        self.uploading = uploading
        # Row id -> (operation id, submitted at) accepted by the service while the state file
        # could not be written: written before anything else, never submitted again.
        self.unwritten_operations: dict[int, tuple[str, float]] = {}

    def submit(self, row: state.FileRow) -> bool:
        assert row.object_key is not None  # noqa: S101 - set by prepare
        kept = self.unwritten_operations.get(row.id)
        if kept is not None:  # accepted earlier, but the state file could not take its id then
            self._record_submission(row, kept)
            return False
        refitted = self.context.refit(row)
        if refitted is None:
            return True  # back to uploading: storage is configured now
        row = refitted
        assert row.object_key is not None  # noqa: S101 - set by prepare
        # The settings recorded when the file was accepted (a config reload affects new files).
        specification = (
            json.loads(row.specification)
            if row.specification
            else self.context.specification(row, row.channels or 1)
        )
        source: str | Path
        if self.objects is None:  # inline: the bytes checked and hashed (or their conversion)
            if not self.setbacks.unchanged(row):
                return False
            chosen = self.uploading.bytes_to_send(row, Path(row.path), state.SUBMITTING)
            if chosen is None:
                return False
            source = chosen[0]
        else:
            try:
                source = self.objects.audio_uri(row.object_key)
            except StorageError as error:
                metrics.error(error.service, error.kind)
                return self.setbacks.transient(row, "submit", error)
        if self.setbacks.submission_cap_reached(row, "submit"):
            return False
        if not self.store.has_room():
            # The service's answer must be written at once, or a restart pays for it again.
            raise state.StateWriteError(
                f"{self.store.path}: less than {state.MIN_FREE_BYTES // 1024} KiB free beside the "
                "state file; nothing is submitted until there is room"
            )
        if not self.setbacks.may_call(
            row, (RECOGNITION, self.context.submit_url()[0]), SUBMIT_CALL
        ):
            return False
        crash_point("before_submit")
        try:
            operation_id = self.context.api.submit(source, specification)
        except Failure as error:
            metrics.error(error.service, error.kind)
            return self._submit_failed(row, error)
        crash_point("after_submit")
        self._record_submission(row, (operation_id, self.clock()))
        if self.objects is None:
            audio.discard(self.context.work_dir, str(row.id))  # sent inline: not needed again
        return False

    def _record_submission(self, row: state.FileRow, accepted: tuple[str, float]) -> None:
        """Commit the operation id the service returned. If the state file cannot take it now,
        keep it in memory (never submit again for it) and write it once the file can."""
        operation_id, submitted_at = accepted
        delay = scheduling.first_check_delay(
            row.duration_seconds or 0.0, row.channels or 1, self.context.seconds_per_minute()
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
        self.gate.url_answers(self.context.submit_url()[0])
        again = f" (submission {row.submissions + 1} of at most {lifecycle.MAX_SUBMISSIONS})"
        log.info(
            "submitted %s: operation %s, first status check in %.1f s%s",
            shown(row.path), operation_id, delay, again if row.submissions else "",
        )  # fmt: skip

    def write_unwritten_operations(self) -> None:
        """Operation ids the state file could not take when they came: write them now."""
        for row_id in list(self.unwritten_operations):
            self._record_submission(self.store.get(row_id), self.unwritten_operations[row_id])

    def _submit_failed(self, row: state.FileRow, error: Failure) -> bool:
        if error.kind == Kind.NOT_THE_API:
            name, url = self.context.submit_url()
            return self.setbacks.not_the_api(row, name, url, "submissions", error)
        if error.kind == Kind.PERMANENT:
            self.setbacks.fail(
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
        return self.setbacks.transient(row, "submit", error)
