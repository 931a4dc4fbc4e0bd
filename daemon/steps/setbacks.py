"""How a step records that it cannot go on now: the file failed for good, is tried again
later, is gone, changed meanwhile (superseded), or must wait for a pause or the quota."""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from daemon import layout, lifecycle, logs, metrics, scheduling, state, webhooks
from daemon.logs import shown
from daemon.outcomes import Failure, Kind
from daemon.render import files, transcripts
from daemon.steps.context import Context, Part

log = logging.getLogger(__name__)


class Setbacks(Part):
    """The endings and delays of a row that any step may record."""

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
                self.context.events_ready()
            log.error("failed %s at %s: %s", shown(audio), stage, message)
            if self.aftercare.deletes_object(row):
                self.aftercare.delete_object(self.store.get(row.id))
            # after_failed when it is due now, then the hook
            self.aftercare.after_end(replace(row, state=state.FAILED, **change.fields))

    def transient(self, row: state.FileRow, stage: str, failure: Failure | str) -> bool:
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

    def may_call(
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

    def unreadable(self, row: state.FileRow, why: str) -> bool:
        """Permissions keep the daemon out: wait a bounded time for a person, then fail."""
        if not Path(row.path).exists():
            self.drop(row, state.QUEUED, "the file disappeared before it was transcribed")
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

    def vanished_or_retry(self, row: state.FileRow, expect: str, message: str) -> bool:
        if not Path(row.path).exists():
            self.drop(row, expect, "the file disappeared before it was transcribed")
            return False
        return self.transient(replace(row, state=state.State(expect)), "read", message)

    def drop(self, row: state.FileRow, expect: str, why: str) -> None:
        if self.store.apply(
            replace(row, state=state.State(expect)), lifecycle.gone(why), self.clock()
        ):
            log.info("dropped %s: %s", shown(row.path), why)

    def unchanged(self, row: state.FileRow, *, object_written: bool = False) -> bool:
        """True if the file is still the version this row describes; otherwise hand it back."""
        try:
            now_stat = os.stat(row.path)
        except FileNotFoundError:
            self.drop(row, row.state, "the file disappeared before it was transcribed")
            return False
        except OSError:
            return True  # a passing permission or I/O problem shows up in the read itself
        if (now_stat.st_size, now_stat.st_mtime_ns) == (row.size, row.mtime_ns):
            return True
        if self.store.apply(row, lifecycle.superseded(), self.clock()):
            log.info("%s changed while being processed; it will be judged again", shown(row.path))
            if object_written:
                self.aftercare.delete_object(self.store.get(row.id))
        self.context.on_changed(row.path)
        return False

    def submission_cap_reached(
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

    def not_the_api(
        self, row: state.FileRow, name: str, url: str, calls: str, error: Failure
    ) -> bool:
        """Something other than the API answered at `url`: pause those calls, keep the row."""
        now = self.clock()
        until = now + self.config.auth_retry_seconds
        self.gate.not_the_api(name, url, calls, error, until)
        self.store.apply(row, lifecycle.later(until, 0.0), now)
        return False


class Step(Part):
    """One step of a file version's way: a part that may have to record a setback."""

    def __init__(self, context: Context, setbacks: Setbacks) -> None:
        super().__init__(context)
        self.setbacks = setbacks
