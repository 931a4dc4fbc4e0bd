"""The state of the local SpeechKit service, independent of HTTP: operations, counters, faults.

`SpeechKitService` answers each API call with a `Reply` (status, JSON body, headers, or "drop
the connection"); the HTTP layer in `speechkit_local.server` only moves bytes. Recognition
runs on a bounded worker pool: fetch the audio, decode it with a real decoder (`audio`), let
the engine (`engines`: echo or whisper) recognise it, at most `engine.capacity` at a time. An
operation becomes visible as done at the later of "processing finished" and "created +
simulated processing time", computed lazily on each poll (no timers). With a queue limit, a
submission beyond capacity + limit unfinished operations is answered 429, as the service's quota.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import hashlib
import json
import logging
import math
import random
import secrets
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from speechkit_local import audio, engines, fetch, iam, logic, recognition
from speechkit_local import faults as faults_module

LOGGER = logging.getLogger("speechkit_local")

DEFAULT_HOST = "127.0.0.1"  # test infrastructure never listens beyond loopback
DEFAULT_SECONDS_PER_MINUTE = 10.0  # documented speed: about 10 s per minute of mono audio
DEFAULT_BASE_DELAY_SECONDS = 0.0  # no fixed overhead unless a test wants one
DEFAULT_RETENTION_SECONDS = 3 * 86400.0  # the service keeps results 3 days after completion
DEFAULT_STORAGE_REGION = "ru-central1"  # Yandex Object Storage's only region
DEFAULT_WORKER_COUNT = 4  # bounded concurrency for fetch + inspect, enough for e2e runs
# Shaped like a real service account id ("aje" + 17 characters); createdBy of every operation.
DEFAULT_SERVICE_ACCOUNT_ID = "ajelocalspeechkit001"
QUEUE_FULL_MESSAGE = "Quota exceeded: too many requests"  # the service's own words for a 429
QUEUE_RETRY_AFTER_SECONDS = 5  # a few seconds of whisper frees a place in the queue


@dataclass
class ServerSettings:
    """Everything the local server needs at start. Secrets are kept out of repr()."""

    host: str = DEFAULT_HOST
    port: int = 0  # 0: any free port, read it back from LocalSpeechKit.url
    api_keys: tuple[str, ...] = field(default=(), repr=False)
    # Keys that authenticate but lack the role: answered 403/7 "Permission denied".
    forbidden_api_keys: tuple[str, ...] = field(default=(), repr=False)
    bearer_tokens: tuple[str, ...] = field(default=(), repr=False)  # never expire
    service_account_id: str = DEFAULT_SERVICE_ACCOUNT_ID
    folder_id: str | None = None  # a request naming another folderId gets 400/3
    seconds_per_minute: float = DEFAULT_SECONDS_PER_MINUTE
    base_delay_seconds: float = DEFAULT_BASE_DELAY_SECONDS
    retention_seconds: float = DEFAULT_RETENTION_SECONDS
    storage_endpoint: str | None = None
    storage_access_key_id: str | None = field(default=None, repr=False)
    storage_secret_access_key: str | None = field(default=None, repr=False)
    storage_region: str = DEFAULT_STORAGE_REGION
    fetch_timeout_seconds: float = fetch.DEFAULT_FETCH_TIMEOUT_SECONDS
    worker_count: int = DEFAULT_WORKER_COUNT
    seed: int | None = None  # seeds fault draws; None: different every run
    faults: faults_module.FaultSettings = field(default_factory=faults_module.FaultSettings)
    # The IAM token exchange accepts JWTs signed by these keys (public halves only).
    iam_keys: tuple[iam.AuthorizedKey, ...] = ()
    iam_audience: str = iam.IAM_AUDIENCE
    # Lifetime of the IAM tokens it issues (and of metadata service tokens); tests shorten it
    # to watch tokens expire and be renewed.
    iam_token_lifetime_seconds: float = iam.DEFAULT_TOKEN_LIFETIME_SECONDS
    # True: the metadata endpoint hands out tokens, as on a VM with a service account attached;
    # False: it answers 404, as on a VM without one.
    metadata_service: bool = False
    engine: str = engines.ECHO  # engines.ENGINE_NAMES
    model: str | None = None  # the whisper engine's --model (None: its default)
    engine_threads: int = 0  # the whisper engine's CPU threads (0: up to 4, one per core)
    # Unfinished operations allowed beyond the engine's capacity before submissions get 429;
    # None: no limit.
    queue_limit: int | None = None


@dataclass(frozen=True)
class Reply:
    """What to answer one HTTP request with; `drop` closes the connection without an answer."""

    status: int = 200
    body: Any = None
    headers: tuple[tuple[str, str], ...] = ()
    drop: bool = False


def error_reply(code: int, message: str, headers: tuple[tuple[str, str], ...] = ()) -> Reply:
    return Reply(logic.HTTP_STATUS_BY_CODE[code], logic.error_body(code, message), headers)


def rejected_reply(rejected: logic.RequestRejectedError) -> Reply:
    return Reply(rejected.http_status, logic.error_body(rejected.code, rejected.message))


DROPPED = Reply(status=0, drop=True)


@dataclass(frozen=True)
class _Timing:
    seconds_per_minute: float
    base_delay_seconds: float
    retention_seconds: float


@dataclass
class _Operation:
    operation_id: str
    created_at: float
    created_by: str
    uri_key: str
    finished_at: float | None = None  # when the worker was done with it
    delay_seconds: float = 0.0  # simulated processing time from creation
    response: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    malformed: str | None = None  # a faults.MALFORMED_KINDS answer instead of its result

    def done_at(self) -> float | None:
        if self.finished_at is None:
            return None
        return max(self.finished_at, self.created_at + self.delay_seconds)


# What stats()["faults_injected"] counts per endpoint ("drop" on submit: before creating).
INJECTED_FAULT_KINDS = {
    faults_module.SUBMIT: (
        "slow",
        "drop",
        "drop_after_create",
        "auth_fail",
        "rate_limit",
        "error",
        "operation_error",
        "malformed",
    ),
    faults_module.OPERATION: ("slow", "drop", "auth_fail", "rate_limit", "error"),
}


@dataclass
class _Counters:
    submit_requests: int = 0
    submissions: int = 0  # operations created: what the real service would bill
    operation_requests: int = 0
    forgotten: int = 0
    iam_exchanges: int = 0  # IAM tokens issued for a good JWT
    iam_refused: int = 0  # exchange requests refused (bad JWT, unknown key, ...)
    iam_outage_answers: int = 0  # exchange requests answered with the injected outage status
    metadata_tokens: int = 0  # tokens handed out by the metadata endpoint
    by_sha256: collections.Counter[str] = field(default_factory=collections.Counter)
    by_uri_key: collections.Counter[str] = field(default_factory=collections.Counter)
    # What each decoded recording held, in order: sha256, seconds per channel, channels.
    received: list[dict[str, Any]] = field(default_factory=list)
    injected: dict[str, collections.Counter[str]] = field(
        default_factory=lambda: {
            endpoint: collections.Counter(dict.fromkeys(kinds, 0))
            for endpoint, kinds in INJECTED_FAULT_KINDS.items()
        }
    )


_CONFIG_KEYS = ("seconds_per_minute", "base_delay_seconds", "retention_seconds")


def merge_timing(current: _Timing, changes: Mapping[str, object]) -> _Timing:
    """`current` with runtime config changes; ValueError naming a bad key or value."""
    values: dict[str, float] = {}
    for name, value in changes.items():
        if name not in _CONFIG_KEYS:
            raise ValueError(f"unknown config setting {name!r}; known: {', '.join(_CONFIG_KEYS)}")
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or value < 0
        ):
            raise ValueError(f"config {name!r}: expected a number >= 0, got {value!r}")
        values[name] = float(value)
    return dataclasses.replace(current, **values)


class SpeechKitService:
    """Operations and counters behind one lock; recognition on a bounded worker pool."""

    def __init__(self, settings: ServerSettings, *, clock: Callable[[], float]) -> None:
        self._settings = settings
        self._clock = clock
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._random = random.Random(settings.seed)  # noqa: S311 - fault draws, not secrets
        self._faults = settings.faults
        self._timing = merge_timing(
            _Timing(
                DEFAULT_SECONDS_PER_MINUTE, DEFAULT_BASE_DELAY_SECONDS, DEFAULT_RETENTION_SECONDS
            ),
            {
                "seconds_per_minute": settings.seconds_per_minute,
                "base_delay_seconds": settings.base_delay_seconds,
                "retention_seconds": settings.retention_seconds,
            },
        )
        self._bearer_tokens: dict[str, float | None] = dict.fromkeys(settings.bearer_tokens)
        self._issued_tokens: list[str] = []
        self._iam_outage_status: int | None = None
        for key in settings.iam_keys:  # a broken key fails at start, not at the first exchange
            try:
                key.public_key()
            except (ValueError, TypeError) as error:
                raise ValueError(f"IAM key {key.key_id}: {error}") from None
        self._operations: dict[str, _Operation] = {}
        self._counters = _Counters()
        storage = None
        if (
            settings.storage_endpoint
            and settings.storage_access_key_id
            and settings.storage_secret_access_key
        ):
            storage = fetch.StorageAccess(
                endpoint_url=settings.storage_endpoint,
                access_key_id=settings.storage_access_key_id,
                secret_access_key=settings.storage_secret_access_key,
                region=settings.storage_region,
            )
        self._fetcher = fetch.AudioFetcher(storage, timeout_seconds=settings.fetch_timeout_seconds)
        self._engine = engines.load_engine(
            settings.engine, model=settings.model, threads=settings.engine_threads
        )
        LOGGER.info("recognition engine: %s", self._engine.describe())
        # Recognitions at once: the engine's own limit, or the worker pool's if that is lower.
        self._capacity = max(1, min(self._engine.capacity, settings.worker_count))
        self._engine_slots = threading.BoundedSemaphore(self._capacity)
        self._in_flight = 0  # submitted to the workers, not finished yet
        self._workers = concurrent.futures.ThreadPoolExecutor(
            max_workers=settings.worker_count, thread_name_prefix="localserver-worker"
        )

    # ------------------------------------------------------------------ lifecycle

    @property
    def stopping(self) -> threading.Event:
        return self._stopping

    def close(self) -> None:
        """Cancel queued recognitions and wait for running ones (each bounded by its timeout)."""
        self._stopping.set()
        self._workers.shutdown(wait=True, cancel_futures=True)

    # ------------------------------------------------------------------ test controls

    def set_faults(self, changes: Mapping[str, object]) -> faults_module.FaultSettings:
        with self._lock:
            self._faults = faults_module.merge_fault_settings(self._faults, changes)
            return self._faults

    def set_config(self, changes: Mapping[str, object]) -> None:
        with self._lock:
            self._timing = merge_timing(self._timing, changes)

    def reset(self) -> None:
        """No faults, zero counters, fault draws restarted from the seed; operations stay."""
        with self._lock:
            self._faults = faults_module.FaultSettings()
            self._iam_outage_status = None
            self._counters = _Counters()
            self._random = random.Random(self._settings.seed)  # noqa: S311 - fault draws

    def accept_bearer_token(self, token: str, expires_at: float | None) -> None:
        with self._lock:
            self._bearer_tokens[token] = expires_at

    def set_iam_outage(self, status: int | None) -> None:
        """Answer every token exchange with `status` (500, 503, 504), or again normally (None)."""
        if status is not None and status not in logic.INJECTABLE_ERRORS:
            choices = ", ".join(str(code) for code in logic.INJECTABLE_ERRORS)
            raise ValueError(f"outage status must be one of {choices} or null, got {status!r}")
        with self._lock:
            self._iam_outage_status = status

    def issued_tokens(self) -> list[str]:
        """Every IAM token issued so far (in-process only: tests look for leaks of them)."""
        with self._lock:
            return list(self._issued_tokens)

    def expire_operation(self, operation_id: str) -> bool:
        """Forget one operation now, as if its retention had run out; False if unknown."""
        with self._lock:
            if self._operations.pop(operation_id, None) is None:
                return False
            self._counters.forgotten += 1
            return True

    def stats(self) -> dict[str, Any]:
        with self._lock:
            now = self._clock()
            self._forget_expired(now)
            pending = done = failed = 0
            for operation in self._operations.values():
                done_at = operation.done_at()
                if done_at is None or now < done_at:
                    pending += 1
                elif operation.error is not None:
                    failed += 1
                else:
                    done += 1
            counters = self._counters
            return {
                "submissions": counters.submissions,
                "submit_requests": counters.submit_requests,
                "operation_requests": counters.operation_requests,
                "submissions_by_sha256": dict(counters.by_sha256),
                "submissions_by_uri_key": dict(counters.by_uri_key),
                "received": [dict(entry) for entry in counters.received],
                "operations": {
                    "pending": pending,
                    "done": done,
                    "error": failed,
                    "forgotten": counters.forgotten,
                },
                "iam": {
                    "exchanges": counters.iam_exchanges,
                    "refused": counters.iam_refused,
                    "outage_answers": counters.iam_outage_answers,
                    "metadata_tokens": counters.metadata_tokens,
                    "outage_status": self._iam_outage_status,
                    "token_lifetime_seconds": self._settings.iam_token_lifetime_seconds,
                },
                "faults": self._faults.to_json(),
                "faults_injected": {
                    endpoint: dict(counter) for endpoint, counter in counters.injected.items()
                },
                "config": dataclasses.asdict(self._timing),
                "recognition": {
                    "engine": self._engine.describe(),
                    "in_flight": self._in_flight,
                    "queue_limit": self._settings.queue_limit,
                },
            }

    # ------------------------------------------------------------------ IAM and metadata

    def _issue_token(self, now: float) -> tuple[str, float]:
        """A new IAM token the API accepts until it expires (caller holds the lock)."""
        expired = [
            token
            for token, expires_at in self._bearer_tokens.items()
            if expires_at is not None and expires_at <= now
        ]
        for token in expired:  # a long run must not grow the table without end
            del self._bearer_tokens[token]
        token = iam.TOKEN_PREFIX + secrets.token_urlsafe(48)
        expires_at = now + self._settings.iam_token_lifetime_seconds
        self._bearer_tokens[token] = expires_at
        self._issued_tokens.append(token)
        return token, expires_at

    def exchange_jwt(self, body: bytes) -> Reply:
        """POST /iam/v1/tokens: a verified JWT buys an IAM token."""
        with self._lock:
            outage = self._iam_outage_status
            if outage is not None:
                self._counters.iam_outage_answers += 1
                code, message = logic.INJECTABLE_ERRORS[outage]
                return error_reply(code, message)
            now = self._clock()
            try:
                service_account = iam.verify_jwt(
                    iam.jwt_from_request(body),
                    self._settings.iam_keys,
                    audience=self._settings.iam_audience,
                    now=now,
                )
            except logic.RequestRejectedError as rejected:
                self._counters.iam_refused += 1
                LOGGER.info("IAM token exchange refused: %s", rejected.message)
                return rejected_reply(rejected)
            token, expires_at = self._issue_token(now)
            self._counters.iam_exchanges += 1
        LOGGER.info("IAM token issued to service account %s", service_account)
        return Reply(200, iam.iam_answer(token, expires_at))

    def metadata_token(self, flavor: str | None) -> Reply:
        """GET the metadata service's token of the VM's service account."""
        if flavor != "Google":
            return error_reply(
                logic.CODE_PERMISSION_DENIED, "Missing required header: Metadata-Flavor: Google"
            )
        if not self._settings.metadata_service:
            return error_reply(logic.CODE_NOT_FOUND, "No service account is attached")
        with self._lock:
            token, _ = self._issue_token(self._clock())
            self._counters.metadata_tokens += 1
        return Reply(200, iam.metadata_answer(token, self._settings.iam_token_lifetime_seconds))

    # ------------------------------------------------------------------ API endpoints

    def _common_faults(
        self, endpoint: str, authorization: str | None
    ) -> tuple[Reply | None, faults_module.FaultDecision]:
        """Apply slow, drop, auth and server-side faults; a Reply means answer it now."""
        with self._lock:
            decision = faults_module.decide_faults(self._faults, endpoint, self._random.random)
            injected = self._counters.injected[endpoint]
            if decision.slow_seconds:
                injected["slow"] += 1
        if decision.slow_seconds:
            self._stopping.wait(decision.slow_seconds)
        with self._lock:
            injected = self._counters.injected[endpoint]  # again: a reset() may have run
            faults = self._faults
            drop_now = decision.drop and not (
                endpoint == faults_module.SUBMIT and faults.drop_after_create
            )
            if drop_now:
                injected["drop"] += 1
                return DROPPED, decision
            if faults.auth_fail:
                injected["auth_fail"] += 1
                return error_reply(logic.CODE_UNAUTHENTICATED, "Unauthenticated"), decision
            outcome = logic.authenticate(
                authorization,
                api_keys=self._settings.api_keys,
                forbidden_api_keys=self._settings.forbidden_api_keys,
                bearer_tokens=self._bearer_tokens,
                service_account_id=self._settings.service_account_id,
                now=self._clock(),
            )
            if outcome.refusal is not None:
                return rejected_reply(outcome.refusal), decision
            if decision.rate_limited:
                injected["rate_limit"] += 1
                retry_after = str(faults.retry_after_seconds)
                return (
                    error_reply(
                        logic.CODE_RESOURCE_EXHAUSTED,
                        "Quota exceeded: too many requests",
                        (("Retry-After", retry_after),),
                    ),
                    decision,
                )
            if decision.error_status is not None:
                injected["error"] += 1
                code, message = logic.INJECTABLE_ERRORS[decision.error_status]
                return error_reply(code, message), decision
        return None, decision

    def submit(self, authorization: str | None, body: bytes) -> Reply:
        """POST /speech/stt/v2/longRunningRecognize."""
        with self._lock:
            self._counters.submit_requests += 1
        early, decision = self._common_faults(faults_module.SUBMIT, authorization)
        if early is not None:
            return early
        try:
            document = json.loads(body.decode("utf-8"))
            request = logic.parse_recognize_request(document, folder_id=self._settings.folder_id)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            return error_reply(logic.CODE_INVALID_ARGUMENT, f"Invalid JSON payload: {error}")
        except logic.RequestRejectedError as rejected:
            return rejected_reply(rejected)

        with self._lock:
            if self._queue_is_full():
                LOGGER.info("submission refused: %d operations unfinished", self._in_flight)
                retry_after = (("Retry-After", str(QUEUE_RETRY_AFTER_SECONDS)),)
                return error_reply(logic.CODE_RESOURCE_EXHAUSTED, QUEUE_FULL_MESSAGE, retry_after)
            self._in_flight += 1
            now = self._clock()
            operation = _Operation(
                operation_id=logic.make_operation_id(secrets.token_hex(16)),
                created_at=now,
                created_by=self._settings.service_account_id,
                uri_key=logic.uri_object_key(request.uri),
            )
            self._operations[operation.operation_id] = operation
            self._counters.submissions += 1
            self._counters.by_uri_key[operation.uri_key] += 1
            faults = self._faults
            forced_error = (
                faults.operation_error_code
                if faults.operation_error_next > 0
                or (
                    faults.operation_error_rate > 0.0
                    and self._random.random() < faults.operation_error_rate
                )
                else None
            )
            if faults.operation_error_next > 0:
                self._faults = dataclasses.replace(
                    faults, operation_error_next=faults.operation_error_next - 1
                )
            if forced_error is not None:
                self._counters.injected[faults_module.SUBMIT]["operation_error"] += 1
            if faults.malformed_next > 0:
                operation.malformed = faults.malformed_kind
                self._faults = dataclasses.replace(
                    self._faults, malformed_next=faults.malformed_next - 1
                )
                self._counters.injected[faults_module.SUBMIT]["malformed"] += 1
            timing = self._timing
            answer = logic.operation_json(
                operation_id=operation.operation_id,
                created_at=operation.created_at,
                created_by=operation.created_by,
                modified_at=now,
            )
        LOGGER.info(
            "operation %s created for %s", operation.operation_id, logic.strip_query(request.uri)
        )
        try:
            self._workers.submit(
                self._recognize, operation.operation_id, request, timing, forced_error
            )
        except RuntimeError:  # the pool is shut down: the server is stopping
            with self._lock:
                self._in_flight -= 1
            self._finish(
                operation.operation_id,
                error=logic.error_body(logic.CODE_INTERNAL, "Server is stopping"),
                delay_seconds=0.0,
            )
        if decision.drop:  # drop_after_create: the operation exists, the answer is lost
            with self._lock:
                self._counters.injected[faults_module.SUBMIT]["drop_after_create"] += 1
            return DROPPED
        return Reply(200, answer)

    def _queue_is_full(self) -> bool:
        """Caller holds the lock."""
        limit = self._settings.queue_limit
        return limit is not None and self._in_flight >= self._capacity + limit

    def get_operation(self, authorization: str | None, operation_id: str) -> Reply:
        """GET /operations/{id}."""
        with self._lock:
            self._counters.operation_requests += 1
        early, _ = self._common_faults(faults_module.OPERATION, authorization)
        if early is not None:
            return early
        with self._lock:
            now = self._clock()
            self._forget_expired(now)
            operation = self._operations.get(operation_id)
            if operation is None:
                return error_reply(logic.CODE_NOT_FOUND, "Operation not found")
            done_at = operation.done_at()
            if done_at is None or now < done_at:
                return Reply(
                    200,
                    logic.operation_json(
                        operation_id=operation.operation_id,
                        created_at=operation.created_at,
                        created_by=operation.created_by,
                        modified_at=max(now, operation.created_at),
                    ),
                )
            answer = logic.operation_json(
                operation_id=operation.operation_id,
                created_at=operation.created_at,
                created_by=operation.created_by,
                modified_at=done_at,
                response=operation.response,
                error=operation.error,
            )
            if operation.malformed is not None:
                answer = faults_module.malformed_answer(answer, operation.malformed)
            return Reply(200, answer)

    def _forget_expired(self, now: float) -> None:
        """Drop operations whose results outlived the retention time (caller holds the lock)."""
        retention = self._timing.retention_seconds
        expired = [
            operation_id
            for operation_id, operation in self._operations.items()
            if logic.is_forgotten(operation.done_at(), now=now, retention_seconds=retention)
        ]
        for operation_id in expired:
            del self._operations[operation_id]
        self._counters.forgotten += len(expired)

    # ------------------------------------------------------------------ recognition (workers)

    def _finish(
        self,
        operation_id: str,
        *,
        delay_seconds: float,
        response: dict[str, Any] | None = None,
        error: dict[str, Any] | None = None,
    ) -> None:
        with self._lock:
            operation = self._operations.get(operation_id)
            if operation is None:  # expired by a test while it was being processed
                return
            operation.response = response
            operation.error = error
            operation.delay_seconds = delay_seconds
            operation.finished_at = self._clock()

    def _recognize(
        self,
        operation_id: str,
        request: logic.RecognizeRequest,
        timing: _Timing,
        forced_error: int | None,
    ) -> None:
        try:
            self._recognize_or_fail(operation_id, request, timing, forced_error)
        except Exception:  # a bug here must end the operation, not leave it pending forever
            LOGGER.exception("operation %s: recognition crashed", operation_id)
            self._finish(
                operation_id,
                error=logic.error_body(logic.CODE_INTERNAL, "Internal error"),
                delay_seconds=timing.base_delay_seconds,
            )
        finally:
            with self._lock:
                self._in_flight -= 1

    def _recognize_or_fail(
        self,
        operation_id: str,
        request: logic.RecognizeRequest,
        timing: _Timing,
        forced_error: int | None,
    ) -> None:
        invalid_audio = logic.error_body(logic.CODE_INVALID_ARGUMENT, logic.INVALID_AUDIO_MESSAGE)
        try:
            data = self._fetcher.fetch(request.uri)
        except fetch.FetchError as failure:
            LOGGER.info("operation %s: %s (%s)", operation_id, failure.message, failure.detail)
            self._finish(
                operation_id,
                error=logic.error_body(failure.code, failure.message),
                delay_seconds=timing.base_delay_seconds,
            )
            return
        digest = hashlib.sha256(data).hexdigest()
        with self._lock:
            self._counters.by_sha256[digest] += 1
        try:
            info = audio.read_audio(
                data,
                request.audio_encoding,
                sample_rate_hertz=request.sample_rate_hertz,
                channel_count=request.audio_channel_count,
            )
        except audio.InvalidAudio as refusal:
            LOGGER.info("operation %s: invalid audio: %s", operation_id, refusal.reason)
            self._finish(operation_id, error=invalid_audio, delay_seconds=timing.base_delay_seconds)
            return
        with self._lock:
            self._counters.received.append(
                {"sha256": digest, "duration_seconds": info.duration_seconds,
                 "channels": info.channels}
            )  # fmt: skip
        delay = logic.completion_delay_seconds(
            info.duration_seconds,
            info.channels,
            seconds_per_minute=timing.seconds_per_minute,
            base_delay_seconds=timing.base_delay_seconds,
        )
        if forced_error is not None:
            LOGGER.info("operation %s: injected operation error %d", operation_id, forced_error)
            error = logic.error_body(forced_error, logic.OPERATION_ERRORS[forced_error])
            self._finish(operation_id, error=error, delay_seconds=delay)
            return
        try:
            with self._engine_slots:
                utterances = self._engine.recognize(data, info, request, self._stopping)
        except audio.InvalidAudio as refusal:
            LOGGER.info("operation %s: invalid audio: %s", operation_id, refusal.reason)
            self._finish(operation_id, error=invalid_audio, delay_seconds=timing.base_delay_seconds)
            return
        chunks = recognition.v2_chunks(
            utterances,
            # With `auto` the service detects the language and does not normalize the text.
            literature_text=request.literature_text
            and request.language_code != logic.AUTO_LANGUAGE,
        )
        LOGGER.info(
            "operation %s: %d chunk(s), %.3f s x %d channel(s), sha256 %s",
            operation_id,
            len(chunks),
            info.duration_seconds,
            info.channels,
            digest,
        )
        self._finish(operation_id, response=logic.recognition_response(chunks), delay_seconds=delay)
