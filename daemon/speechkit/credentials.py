"""Credentials for the recognition API: the `Authorization` header every request carries.

Four ways a service account authenticates (SPEECHKIT.md, "Authentication"), one provider each:

- `speechkit.api_key`: `Api-Key <key>`, never expires.
- `speechkit.iam_token`: `Bearer <token>`, static; it dies within 12 h (a warning says so).
- `speechkit.service_account_key_file`: the authorized key JSON of `yc iam key create`. A PS256
  JWT signed with it is exchanged at `iam_url` for an IAM token, renewed long before it expires.
- `speechkit.metadata_service: true`: the VM metadata service hands out the token of the
  service account attached to the VM, renewed the same way.

The key file itself is read and parsed by `daemon.secrets` when the config loads, so a bad key
file is a config error; the providers here get the parsed key from the config
(`parse_key_file` and `ServiceAccountKey` stay reachable here under their old names).

Tokens are renewed on demand, not by a background thread: the worker that first finds the token
due for renewal exchanges a new one (bounded by the request timeout) while the other workers
keep using the current token, which is still valid for a quarter of its life. Only when no valid
token is left do workers wait, and then at most one request timeout. An idle daemon makes no
requests at all; there is no thread to start, watch or stop. A failed exchange keeps the current
token while it is valid and is retried with backoff. IAM tokens live only in memory: never on
disk, never in a log line or an exception message.
"""

from __future__ import annotations

import base64
import datetime
import json
import logging
import random
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import requests
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from daemon import __version__, logs, scheduling, transport
from daemon.secrets import FormatError, ServiceAccountKey, parse_key_file  # noqa: F401 - see top

if TYPE_CHECKING:
    from daemon.config import SpeechKit

log = logging.getLogger(__name__)

USER_AGENT = f"speechkit-watch/{__version__}"
# The audience Yandex IAM expects in every JWT (SPEECHKIT.md), whatever URL it is posted to.
IAM_AUDIENCE = "https://iam.api.cloud.yandex.net/iam/v1/tokens"
JWT_LIFETIME_SECONDS = 3600  # the longest IAM accepts: tolerates the most clock skew
MAX_TOKEN_AGE_SECONDS = 3600.0  # Yandex's advice: get a new IAM token about every hour
REFRESH_MARGIN_SECONDS = 600.0  # renew at the latest 10 min before expiry ...
REFRESH_MARGIN_FRACTION = 0.25  # ... or with a quarter of a short life left, whichever is less
USABLE_MARGIN_SECONDS = 30.0  # a token this close to expiry may die on the way: not sent ...
USABLE_MARGIN_FRACTION = 0.05  # ... (for short-lived tokens: this share of the lifetime)
MAX_RETRY_SECONDS = 60.0  # and then at least once a minute, for as long as it takes
# The metadata service answers only requests that carry this header (it stops SSRF tricks).
METADATA_HEADERS: Mapping[str, str] = {"Metadata-Flavor": "Google"}
MAX_SERVICE_MESSAGE = 200  # an error message quoted from IAM is cut to this many characters


class CredentialsError(Exception):
    """No usable token. `auth`: the key itself was refused (an operator must act); otherwise
    the token service was unreachable or failing, and it is retried."""

    def __init__(self, message: str, *, auth: bool = False) -> None:
        super().__init__(message)
        self.auth = auth


# ---------------------------------------------------------------------------------------------
# The JWT (pure)


def base64url(data: bytes) -> str:
    """Unpadded base64url, as JWTs use it."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def pss_padding() -> padding.PSS:
    """PS256 (RFC 7518 3.5): RSASSA-PSS, MGF1 with SHA-256, salt as long as the hash."""
    return padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH)


def make_jwt(
    key: ServiceAccountKey,
    *,
    now: float,
    audience: str = IAM_AUDIENCE,
    lifetime_seconds: int = JWT_LIFETIME_SECONDS,
) -> str:
    """The signed JWT that IAM exchanges for a token (header kid, claims iss/aud/iat/exp)."""
    header = {"typ": "JWT", "alg": "PS256", "kid": key.key_id}
    issued_at = int(now)
    claims = {
        "iss": key.service_account_id,
        "aud": audience,
        "iat": issued_at,
        "exp": issued_at + lifetime_seconds,
    }
    signing_input = ".".join(
        base64url(json.dumps(part, separators=(",", ":")).encode("utf-8"))
        for part in (header, claims)
    )
    signature = key.private_key.sign(signing_input.encode("ascii"), pss_padding(), hashes.SHA256())
    return f"{signing_input}.{base64url(signature)}"


# ---------------------------------------------------------------------------------------------
# Token answers and the renewal schedule (pure)

_RFC3339 = re.compile(
    r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d+))?(Z|[+-]\d{2}:\d{2})$", re.IGNORECASE
)


def parse_timestamp(text: str) -> float:
    """Epoch seconds from an RFC 3339 time such as `2019-08-06T23:41:31.938779385Z`.

    Python parses at most microseconds; IAM sends nanoseconds.
    """
    match = _RFC3339.match(text.strip())
    if match is None:
        raise FormatError(f"not an RFC 3339 time: {text[:40]!r}")
    whole, fraction, zone = match.groups()
    zone = "+00:00" if zone.upper() == "Z" else zone
    moment = datetime.datetime.fromisoformat(whole + zone)
    return moment.timestamp() + (float("0." + fraction) if fraction else 0.0)


@dataclass(frozen=True)
class Token:
    """A bearer token and how long it lives from the moment it was received."""

    value: str = field(repr=False)
    lifetime_seconds: float


def token_from_iam_answer(body: Any, *, now: float) -> Token:
    """`{"iamToken", "expiresAt"}` → Token; ValueError for anything else (never quoting it)."""
    if not isinstance(body, dict):
        raise FormatError("the answer is not a JSON object")
    value, expires_at = body.get("iamToken"), body.get("expiresAt")
    if not isinstance(value, str) or not value:
        raise FormatError("the answer has no 'iamToken'")
    if not isinstance(expires_at, str):
        raise FormatError("the answer has no 'expiresAt'")
    return Token(value, parse_timestamp(expires_at) - now)


def token_from_metadata_answer(body: Any) -> Token:
    """`{"access_token", "expires_in", "token_type"}` → Token; ValueError for anything else."""
    if not isinstance(body, dict):
        raise FormatError("the answer is not a JSON object")
    value, expires_in = body.get("access_token"), body.get("expires_in")
    if not isinstance(value, str) or not value:
        raise FormatError("the answer has no 'access_token'")
    if isinstance(expires_in, bool) or not isinstance(expires_in, int | float):
        raise FormatError("the answer has no numeric 'expires_in'")
    return Token(value, float(expires_in))


@dataclass(frozen=True)
class Schedule:
    """When to renew a token and until when to send it, on the monotonic clock."""

    refresh_at: float
    usable_until: float


def token_schedule(received_at: float, lifetime_seconds: float) -> Schedule:
    """Renew hourly, and always with time to spare before expiry; stop sending just before it.

    A 12 h token is renewed after an hour; a 15 s token after about 11 s and sent until about
    14 s; a token that arrives already expired (a local clock far ahead) is not sent at all.
    """
    lifetime = max(0.0, lifetime_seconds)
    refresh_margin = min(REFRESH_MARGIN_SECONDS, lifetime * REFRESH_MARGIN_FRACTION)
    usable_margin = min(USABLE_MARGIN_SECONDS, lifetime * USABLE_MARGIN_FRACTION)
    return Schedule(
        refresh_at=received_at + min(MAX_TOKEN_AGE_SECONDS, lifetime - refresh_margin),
        usable_until=received_at + lifetime - usable_margin,
    )


def refused_by_token_service(status: int) -> bool:
    """Whether an HTTP status from IAM or the metadata service means "your key is not good".

    400 (a JWT IAM cannot accept), 401/403 (key deleted, wrong signature), 404 (the metadata
    service: no service account attached to this VM) need an operator; 429 and 5xx pass.
    """
    return status in (400, 401, 403, 404)


def config_key(settings: SpeechKit) -> str:
    """The config key holding the credential in use, for messages that tell what to check."""
    if settings.service_account_key is not None:
        return "speechkit.service_account_key_file"
    if settings.metadata_service:
        return "speechkit.metadata_service"
    if settings.iam_token is not None:
        return "speechkit.iam_token"
    return "speechkit.api_key"


# ---------------------------------------------------------------------------------------------
# Providers


class Credentials(Protocol):
    """What RecognitionClient needs; every method may be called from several threads."""

    def authorization_header(self) -> str:
        """The value of the `Authorization` header; CredentialsError if there is none."""
        ...

    def refused(self, header: str) -> None:
        """The API answered 401 to a request sent with `header`: do not send it again."""
        ...

    def close(self) -> None: ...


class StaticCredentials:
    """An API key or a static IAM token: the same header for every request."""

    def __init__(self, header: str) -> None:
        self._header = header

    def __repr__(self) -> str:
        return f"StaticCredentials({self._header.split(' ', 1)[0]} ***)"

    def authorization_header(self) -> str:
        return self._header

    def refused(self, header: str) -> None:
        """Nothing to renew: the pipeline pauses and says which key to check."""

    def close(self) -> None:
        """Nothing to release."""


@dataclass
class _Current:
    """The token in use and its schedule; replaced whole under the lock."""

    header: str = field(repr=False)
    schedule: Schedule


class RefreshingCredentials:
    """A bearer token from `fetch`, renewed on demand by the first caller that finds it due.

    `fetch` gets a new token (one network call bounded by `timeout_seconds`) or raises
    CredentialsError. Thread-safe: one renewal at a time; callers that still hold a valid
    token never wait for it.
    """

    def __init__(
        self,
        fetch: Callable[[], Token],
        *,
        source: str,
        timeout_seconds: float,
        monotonic: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self._fetch = fetch
        self._source = source  # "the IAM token exchange at URL", for log lines
        self._timeout = timeout_seconds
        self._monotonic = monotonic
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._on_close = on_close
        self._state_lock = threading.Lock()  # guards the fields below; never held over I/O
        self._renewal_lock = threading.Lock()  # held by the one caller that is renewing
        self._current: _Current | None = None
        self._failures = 0
        self._next_attempt_at = 0.0
        self._last_error: CredentialsError | None = None

    def __repr__(self) -> str:
        return f"RefreshingCredentials({self._source})"

    def close(self) -> None:
        if self._on_close is not None:
            self._on_close()

    def refused(self, header: str) -> None:
        with self._state_lock:
            if self._current is not None and self._current.header == header:
                log.warning("the API refused the current token; getting a new one")
                self._current = None

    def authorization_header(self) -> str:
        now = self._monotonic()
        with self._state_lock:
            current = self._current
            if current is not None and now < current.schedule.refresh_at:
                return current.header
        if current is not None and now < current.schedule.usable_until:
            # Due for renewal but still good: one caller renews, the others keep using it.
            if not self._renewal_lock.acquire(blocking=False):
                return current.header
        elif not self._renewal_lock.acquire(timeout=self._timeout):
            raise CredentialsError(
                f"timed out waiting for a token from {self._source}; retrying later"
            )
        try:
            return self._renew()
        finally:
            self._renewal_lock.release()

    def _renew(self) -> str:
        """Called with the renewal lock held: renew unless another caller just did."""
        now = self._monotonic()
        with self._state_lock:
            current = self._current
            if current is not None and now < current.schedule.refresh_at:
                return current.header  # renewed by the caller we waited for
            usable = (
                current if current is not None and now < current.schedule.usable_until else None
            )
            if now < self._next_attempt_at:  # backing off after a failure: do not ask again yet
                if usable is not None:
                    return usable.header
                last = self._last_error
                raise CredentialsError(
                    str(last) if last else f"no token from {self._source} yet; retrying later",
                    auth=bool(last and last.auth),
                )
        try:
            token = self._fetch()
        except CredentialsError as error:
            return self._failed(error, usable)
        received_at = self._monotonic()
        schedule = token_schedule(received_at, token.lifetime_seconds)
        logs.add_secret(token.value)  # last line of defence: never in a log line
        with self._state_lock:
            self._current = _Current(f"Bearer {token.value}", schedule)
            self._failures = 0
            self._next_attempt_at = 0.0
            self._last_error = None
        log.info(
            "got a new IAM token from %s; it expires in %s; renewing it in %s",
            self._source, logs.duration(token.lifetime_seconds),
            logs.duration(schedule.refresh_at - received_at),
        )  # fmt: skip
        if received_at >= schedule.usable_until:
            log.warning(
                "the new IAM token from %s has already expired by this machine's clock: is the "
                "clock right?", self._source,
            )  # fmt: skip
        return f"Bearer {token.value}"

    def _failed(self, error: CredentialsError, usable: _Current | None) -> str:
        now = self._monotonic()
        with self._state_lock:
            self._failures += 1
            delay = scheduling.retry_delay(self._failures, self._rng, cap=MAX_RETRY_SECONDS)
            self._next_attempt_at = now + delay
            self._last_error = error
        if usable is not None and now < usable.schedule.usable_until:
            log.warning(
                "cannot renew the IAM token (%s); the current one stays valid for %s more; "
                "retrying in %.0f s", error, logs.duration(usable.schedule.usable_until - now),
                delay,
            )  # fmt: skip
            return usable.header
        log.error("cannot get an IAM token (%s); retrying in %.0f s", error, delay)
        raise error


# ---------------------------------------------------------------------------------------------
# Token sources (one network call each)


def _service_message(response: requests.Response) -> str:
    """`HTTP 401: message` from a token service's error answer, never longer than a line."""
    message = response.reason or "error"
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("message"), str) and body["message"]:
        message = body["message"]
    message = " ".join(message.split())[:MAX_SERVICE_MESSAGE]
    return f"HTTP {response.status_code}: {message}"


class IamExchange:
    """Exchanges a JWT signed with a service account key for an IAM token at `iam_url`."""

    def __init__(
        self,
        key: ServiceAccountKey,
        iam_url: str,
        *,
        timeout_seconds: float,
        session: requests.Session,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.key = key
        self.iam_url = iam_url
        self.timeout = timeout_seconds
        self.session = session
        self.clock = clock

    def __call__(self) -> Token:
        jwt = make_jwt(self.key, now=self.clock())
        try:
            response = self.session.post(
                self.iam_url, json={"jwt": jwt}, timeout=self.timeout, allow_redirects=False
            )
        except requests.RequestException as error:
            why = transport.tunnel_refusal(error) or type(error).__name__
            raise CredentialsError(f"IAM unreachable: {why}") from None
        if response.status_code != 200:
            refused = refused_by_token_service(response.status_code)
            what = "IAM refused the service account key" if refused else "IAM failed"
            raise CredentialsError(
                f"{what} ({_service_message(response)}); key id {self.key.key_id}, service "
                f"account {self.key.service_account_id}",
                auth=refused,
            )
        try:
            return token_from_iam_answer(response.json(), now=self.clock())
        except ValueError as error:
            raise CredentialsError(f"IAM answered oddly: {error}") from None


class MetadataToken:
    """Reads the token of the VM's service account from the metadata service."""

    def __init__(
        self, metadata_url: str, *, timeout_seconds: float, session: requests.Session
    ) -> None:
        self.metadata_url = metadata_url
        self.timeout = timeout_seconds
        self.session = session

    def __call__(self) -> Token:
        try:
            response = self.session.get(
                self.metadata_url,
                headers=dict(METADATA_HEADERS),
                timeout=self.timeout,
                allow_redirects=False,
            )
        except requests.RequestException as error:
            raise CredentialsError(
                f"metadata service unreachable: {type(error).__name__}; is this a Yandex Cloud VM?"
            ) from None
        if response.status_code != 200:
            refused = refused_by_token_service(response.status_code)
            hint = "; is a service account attached to this VM?" if refused else ""
            raise CredentialsError(
                f"the metadata service gave no token ({_service_message(response)}){hint}",
                auth=refused,
            )
        try:
            return token_from_metadata_answer(response.json())
        except ValueError as error:
            raise CredentialsError(f"the metadata service answered oddly: {error}") from None


def from_settings(
    settings: SpeechKit,
    *,
    clock: Callable[[], float] = time.time,
    monotonic: Callable[[], float] = time.monotonic,
    rng: random.Random | None = None,
) -> Credentials:
    """The provider for the one credential the config sets."""
    if settings.api_key is not None:
        return StaticCredentials(f"Api-Key {settings.api_key.reveal()}")
    if settings.iam_token is not None:
        return StaticCredentials(f"Bearer {settings.iam_token.reveal()}")
    session = requests.Session()
    session.headers["User-Agent"] = USER_AGENT
    timeout = settings.request_timeout_seconds
    fetch: Callable[[], Token]
    if settings.service_account_key is not None:
        fetch = IamExchange(
            settings.service_account_key, settings.iam_url, timeout_seconds=timeout,
            session=session, clock=clock,
        )  # fmt: skip
        source = f"the IAM token exchange at {settings.iam_url}"
    elif settings.metadata_service:
        fetch = MetadataToken(settings.metadata_url, timeout_seconds=timeout, session=session)
        source = f"the metadata service at {settings.metadata_url}"
    else:
        session.close()
        raise ValueError("no credential in the speechkit settings")  # config validation prevents
    return RefreshingCredentials(
        fetch, source=source, timeout_seconds=timeout, monotonic=monotonic, rng=rng,
        on_close=session.close,
    )  # fmt: skip
