"""The end of a file version's way: its outputs written, DONE recorded, the results removed
from the service (v3) and the object deleted; and reading back a result saved earlier."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

from daemon import layout, lifecycle, metrics, render, scheduling, state, webhooks
from daemon.crashpoints import crash_point
from daemon.logs import shown
from daemon.render import files
from daemon.steps.context import Part

log = logging.getLogger(__name__)
RESULT_RETENTION_SECONDS = 3 * 86400  # the service forgets results 3 days after completion
RETENTION_MARGIN_SECONDS = 3600  # resubmit a little before the service would answer 404
REUSABLE_SECONDS = RESULT_RETENTION_SECONDS - RETENTION_MARGIN_SECONDS


def read_result(saved: Path) -> dict[str, Any] | None:
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


class Finish(Part):
    """Writes a finished file version's outputs and records its end."""

    def finish(
        self, row: state.FileRow, operation: dict[str, Any], checks: int, *, fetched: bool = True
    ) -> bool:
        """Write the outputs, then record DONE, then remove the results from the service (v3:
        unless they came from an earlier file's saved result) and delete the object."""
        audio = Path(row.path)
        out_dir = self.context.output_dir(row)
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
                self.context.events_ready()
            lines = render.line_count(operation)  # one .txt line per chunk or utterance
            log.info(
                "done %s: operation %s, %d line(s), %d status check(s)",
                shown(audio), row.operation_id, lines, checks,
            )  # fmt: skip
            crash_point("before_forget")
            if fetched:
                self._forget(row)
            crash_point("before_delete")
            if self.context.delete_in_batches:
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
        # it by now, or will not reuse it (`Prepare._reuse` records that only while this row is
        # PENDING).
        if self.store.operation_awaited(row.operation_id, exclude=row.id):
            return
        self.context.backend(row).forget(row.operation_id)

    def saved_result(self, row: state.FileRow) -> dict[str, Any] | None:
        """The finished operation saved beside an earlier file, if it is still there intact."""
        result = read_result(layout.row_output(self.config, row, "json"))
        if result is not None and render.result_id(result) == row.operation_id:
            return result
        return None
