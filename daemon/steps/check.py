"""PENDING: status checks of a submitted operation, spaced by the audio's length, until it is
done (then its outputs are written), failed (the service's own errors are submitted again) or too
old for the service to keep."""

from __future__ import annotations

import json
import logging
import threading

from daemon import lifecycle, metrics, render, scheduling, speechkit, state
from daemon.gate import CHECK_CALL, OPERATIONS_URL, STT_V3_URL
from daemon.logs import shown
from daemon.outcomes import Failure, Kind, Service
from daemon.steps.context import Context
from daemon.steps.finish import RESULT_RETENTION_SECONDS, RETENTION_MARGIN_SECONDS, Finish
from daemon.steps.setbacks import Setbacks, Step

log = logging.getLogger(__name__)
RECOGNITION = Service.RECOGNITION
# Operation errors that are the service's own trouble (google.rpc.Code): DEADLINE_EXCEEDED,
# RESOURCE_EXHAUSTED, ABORTED, INTERNAL, UNAVAILABLE. Submitted again; other codes fail the file.
RETRYABLE_OPERATION_CODES = frozenset({4, 8, 10, 13, 14})
# A done operation whose answer is no well-formed result (transcripts.result_problem) is checked
# again with backoff, in case a proxy or the service garbled one answer; this many malformed
# answers in a row fail the file, never an empty transcript indistinguishable from silence.
MALFORMED_RESULT_CHECKS = 3


class Check(Step):
    """PENDING: checks the operation and finishes the file when it is done."""

    def __init__(self, context: Context, setbacks: Setbacks, finishing: Finish) -> None:
        super().__init__(context, setbacks)
        self.finishing = finishing
        self._lock = threading.Lock()
        # Malformed answers in a row per row id. In memory: after a restart the count starts
        # again, which costs at most MALFORMED_RESULT_CHECKS more status checks.
        self._malformed: dict[int, int] = {}

    def check(self, row: state.FileRow) -> bool:
        assert row.operation_id is not None  # noqa: S101 - set by submit
        now = self.clock()
        if row.submitted_at is not None and now - row.submitted_at > (
            RESULT_RETENTION_SECONDS - RETENTION_MARGIN_SECONDS
        ):
            return self._resubmit(
                row, f"operation {row.operation_id} is older than the service keeps results"
            )
        if not self.setbacks.may_call(row, (RECOGNITION, OPERATIONS_URL), CHECK_CALL):
            return False
        backend = self.context.backend(row)  # the API that accepted it reads it
        try:
            status = backend.status(row.operation_id)
        except Failure as error:
            metrics.error(error.service, error.kind)
            if error.kind == Kind.NOT_FOUND:
                return self._resubmit(
                    row, f"operation {row.operation_id} is unknown to the service (expired?)"
                )
            if error.kind == Kind.NOT_THE_API:
                name, url = self.context.check_url(error)
                return self.setbacks.not_the_api(row, name, url, "status checks", error)
            return self.setbacks.transient(row, "status check", error)
        self.gate.credentials_accepted(RECOGNITION)
        self.gate.url_answers(OPERATIONS_URL)
        if isinstance(status, speechkit.Finished) and self.context.row_api(row) == "v3":
            self.gate.url_answers(STT_V3_URL)  # its getRecognition answered too
        checks = row.checks + 1
        if isinstance(status, speechkit.Running):
            delay = scheduling.later_check_delay(
                checks, row.duration_seconds or 0.0, row.channels or 1,
                self.context.seconds_per_minute(), self.config.polling.max_interval_seconds,
            )  # fmt: skip
            self.store.apply(row, lifecycle.checked(row, now, delay), now)
            log.debug("operation %s not done yet; next check in %.1f s", row.operation_id, delay)
            return False
        if row.duplicate_of is None:
            self.context.learn(row, render.operation_of(status.operation))
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
            self.setbacks.fail(
                row, "recognition",
                f"the service could not recognise the audio: {status.message}",
                expect=state.PENDING, code=status.code, operation_id=row.operation_id,
            )  # fmt: skip
            return False
        if isinstance(status, speechkit.Finished):
            specification = json.loads(row.specification) if row.specification else {}
            return self.finishing.finish(row, backend.result(status, specification), checks)
        reason = f"the service answered with a malformed result: {status.problem}"
        if malformed >= MALFORMED_RESULT_CHECKS:
            self.setbacks.fail(
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
        if self.setbacks.submission_cap_reached(row, "recognition", why, code):
            return False
        now = self.clock()
        log.warning("%s of %s; submitting again in %.0f s (submission %d of at most %d)",
                    why, shown(row.path), delay, row.submissions + 1,
                    lifecycle.MAX_SUBMISSIONS)  # fmt: skip
        change = lifecycle.submit_again(why, now, delay, self.context.key_for(digest), code)
        return self.store.apply(row, change, now)
