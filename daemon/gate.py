"""The gate every call to a service passes: the hourly quotas, and the pauses of a service that
refused our credentials or of a URL that answered as something other than the API.

A step asks the gate before it calls; the gate says "go" (and counts the call) or until when to
wait, without a request being sent. Pauses are service-wide, so a revoked key costs one request
per `auth_retry_seconds`, not one per file; each pause and each start of pacing is logged once.
The gate owns this state; what to record for a row that waits is the steps' business.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable

from daemon import lifecycle, metrics, quota, state
from daemon.config import Config, Quota
from daemon.outcomes import Failure, Service
from daemon.speechkit import credentials

log = logging.getLogger(__name__)

SUBMIT_CALL, CHECK_CALL = lifecycle.SUBMIT_CALL, "check"  # the two hourly quotas, by their calls
# URLs that answered something other than the API (a bare 404, an HTML page): paused on their own.
RECOGNIZE_URL, OPERATIONS_URL = "speechkit.recognize_url", "speechkit.operations_url"
STT_V3_URL = "speechkit.stt_v3_url"  # API v3's submissions (and result reads) go here
STORAGE_CREDENTIALS = "storage.access_key_id / storage.secret_access_key"
# A file is uploaded at most this long before the submission quota has a slot for it, so that
# the submission follows the upload instead of an hour-long backlog sitting in the bucket.
UPLOAD_LEAD_SECONDS = 60.0


def check_limit(config: Config) -> int:
    """Status checks allowed per window: API v3's quota is per second, v2's per hour."""
    if config.speechkit.api == "v3":
        return config.quota.status_checks_per_second
    return config.quota.status_checks_per_hour


def reported_limits(config: Config) -> tuple[dict[str, int], dict[str, int]]:
    """The limits `status` and the metrics report, by call: per hour, and per second (API v3's
    status checks, which have no hourly limit)."""
    hourly = {SUBMIT_CALL: config.quota.submissions_per_hour}
    if config.speechkit.api == "v3":
        return hourly, {CHECK_CALL: config.quota.status_checks_per_second}
    return {**hourly, CHECK_CALL: config.quota.status_checks_per_hour}, {}


def check_window(config: Config, history: Iterable[float]) -> quota.SlidingWindow:
    """The window status checks are paced in; the calls of the state file count in it, so the
    pace holds across restarts."""
    seconds = quota.SECOND_WINDOW_SECONDS if config.speechkit.api == "v3" else quota.WINDOW_SECONDS
    return quota.SlidingWindow(check_limit(config), seconds, history=history)


class Gate:
    """Quota windows and pauses; safe to use from several worker threads."""

    def __init__(self, config: Config, store: state.Store, clock: Callable[[], float]) -> None:
        self.config = config
        self.store = store
        since = clock() - quota.WINDOW_SECONDS
        self.windows = {
            SUBMIT_CALL: quota.SlidingWindow(
                config.quota.submissions_per_hour, history=store.recent_calls(SUBMIT_CALL, since)
            ),
            CHECK_CALL: check_window(config, store.recent_calls(CHECK_CALL, since)),
        }
        self.pauses = {
            name: quota.Pause()
            for name in (
                Service.RECOGNITION,
                Service.STORAGE,
                RECOGNIZE_URL,
                OPERATIONS_URL,
                STT_V3_URL,
            )
        }
        self._pacing: set[str] = set()
        self._uploading: set[int] = set()  # rows past the upload gate, not yet SUBMITTING
        self._lock = threading.Lock()

    def set_limits(self, settings: Quota) -> None:
        """New hourly limits (a config reload); the calls already counted stay counted."""
        self.windows[SUBMIT_CALL].limit = settings.submissions_per_hour
        self.windows[CHECK_CALL].limit = check_limit(self.config)
        self.windows[CHECK_CALL].window = check_window(self.config, ()).window

    # -- before a call ------------------------------------------------------------------------

    def blocked_until(self, names: Iterable[str], now: float) -> float | None:
        """The end of the first pause among `names` that holds, or None: the call may go."""
        for name in names:
            blocked = self.pauses[name].blocked_until(now, self.config.auth_retry_seconds)
            if blocked is not None:
                return blocked
        return None

    def take(self, call: str, now: float) -> float:
        """Take a slot of the hourly quota of `call` and record it (0.0), or the seconds until a
        slot frees up. A call that cannot be recorded (StateWriteError) takes no slot."""
        wait = self.windows[call].acquire(now)
        if wait > 0:
            self._pacing_started(call, wait)
            return wait
        with self._lock:
            self._pacing.discard(call)
        try:
            self.store.record_call(call, now, durable=lifecycle.call_synced(call))
        except state.StateWriteError:
            self.windows[call].release(now)  # a call that cannot be recorded is not made
            raise
        metrics.api_call(call)
        return 0.0

    def upload_wait(self, row_id: int, now: float) -> float:
        """0.0 when an upload may start now (the row counts as uploading until `uploaded`),
        else how long to wait: a file goes up only shortly before its submission can happen."""
        with self._lock:  # uploads that passed this gate count until they are SUBMITTING
            waiting = self.store.count_in_states([state.SUBMITTING]) + len(self._uploading)
            wait = self.windows[SUBMIT_CALL].wait_for_slot(now, ahead=waiting)
            if wait <= UPLOAD_LEAD_SECONDS:
                self._uploading.add(row_id)
                return 0.0
        self._pacing_started(SUBMIT_CALL, wait)
        return wait - UPLOAD_LEAD_SECONDS

    def uploaded(self, row_id: int) -> None:
        with self._lock:
            self._uploading.discard(row_id)

    def _pacing_started(self, call: str, wait: float) -> None:
        """One warning when calls of a kind begin to wait for the hourly quota."""
        with self._lock:
            first = call not in self._pacing
            self._pacing.add(call)
        if first:
            window = self.windows[call]
            log.log(
                logging.WARNING if window.window >= quota.WINDOW_SECONDS else logging.DEBUG,
                "%s quota of %d %s calls reached; pacing them (next slot in %.1f s)",
                "hourly" if window.window >= quota.WINDOW_SECONDS else "per-second",
                window.limit, call, wait,
            )  # fmt: skip

    # -- after a call -------------------------------------------------------------------------

    def credentials_refused(self, failure: Failure, until: float) -> None:
        """Pause every call to the failure's service; one loud line when the pause begins."""
        service = failure.service
        if self.pauses[service].pause(until):
            metrics.credential_pause(service)
            log.error(
                "the %s refused our credentials (%s): check %s; work that needs it is paused and "
                "retried every %.0f s; no file is failed for this",
                service, failure, self._credential_key(service), self.config.auth_retry_seconds,
            )  # fmt: skip

    def credentials_paused(self) -> dict[str, bool]:
        """Service -> whether its calls are paused for refused credentials now (metrics)."""
        return {
            str(service): self.pauses[service].paused()
            for service in (Service.RECOGNITION, Service.STORAGE)
        }

    def paused_names(self) -> list[str]:
        """What is paused now (a service refusing our credentials, a URL that is not the API)."""
        return [str(name) for name, pause in self.pauses.items() if pause.paused()]

    def credentials_accepted(self, service: Service) -> None:
        if self.pauses[service].resume():
            log.info("the %s accepts our credentials again; work resumes", service)

    def not_the_api(self, name: str, url: str, calls: str, failure: Failure, until: float) -> None:
        """Something other than the API answered at `url`: pause those calls (logged once)."""
        if self.pauses[name].pause(until):
            log.error(
                "%s at %s get answers that are not the SpeechKit API (%s): check %s; %s are "
                "paused and tried again every %.0f s; no file is submitted again or failed for it",
                calls, url, failure.message, name, calls, self.config.auth_retry_seconds,
            )  # fmt: skip

    def url_answers(self, name: str) -> None:
        if self.pauses[name].resume():
            log.info("%s answers as the SpeechKit API again; work resumes", name)

    def _credential_key(self, service: Service) -> str:
        if service == Service.STORAGE:
            return STORAGE_CREDENTIALS
        return credentials.config_key(self.config.speechkit)
