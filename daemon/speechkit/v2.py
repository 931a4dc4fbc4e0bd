"""The SpeechKit v2 asynchronous recognition API: submit `longRunningRecognize`, read operations.

A thin adapter over `daemon.transport` (urllib3 pools: nothing retried, no redirect followed),
one implementation of `daemon.speechkit.Backend`. Every call has a timeout. Errors are
classified from the HTTP status and the gRPC code in the body (never from message text) into
the kinds of `daemon.outcomes`.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from daemon import __version__, outcomes
from daemon.config import SpeechKit
from daemon.outcomes import Kind
from daemon.render import transcripts
from daemon.speechkit import Failed, Finished, Malformed, Running, Status, documented_failure
from daemon.speechkit import credentials as credentials_module
from daemon.transport import Response, Transport, TransportError

log = logging.getLogger(__name__)

USER_AGENT = f"speechkit-watch/{__version__}"

# The kinds of daemon.outcomes, by the names this API's callers know them by.
TRANSIENT = Kind.TRANSIENT
AUTH = Kind.AUTH
PERMANENT = Kind.PERMANENT
NOT_FOUND = Kind.NOT_FOUND
AMBIGUOUS = Kind.AMBIGUOUS
NOT_THE_API = Kind.NOT_THE_API

CODE_NOT_FOUND = 5  # google.rpc.Code NOT_FOUND: the API's "no such operation"
# The `@type` of a done v2 operation's `response`. Another (v3's google.protobuf.Empty: its
# results are read with getRecognition) is no v2 result, never an empty transcript.
RESPONSE_TYPE = "type.googleapis.com/yandex.cloud.ai.stt.v2.LongRunningRecognitionResponse"


class ApiError(outcomes.Failure):
    """A failure of the recognition API (a `Failure` whose service is the recognition API)."""

    # The config key of the URL that failed, when it is not the one the call's kind implies
    # (v3's getRecognition during a status check: `speechkit.stt_v3_url`).
    url_key: str | None = None

    def __init__(
        self,
        kind: Kind | str,
        message: str,
        *,
        status: int | None = None,
        code: int | None = None,
        retry_after: float | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(
            kind, message, service=outcomes.Service.RECOGNITION, status=status, code=code,
            retry_after=retry_after, request_id=request_id,
        )  # fmt: skip


def classify(status: int, code: int | None) -> Kind:
    """What to do about an HTTP error status and the gRPC code of the API's JSON error body.

    `code` is None when the body is not the API's error shape. Only the API's own word counts
    as "no such operation" or "bad request"; the same status from anything else is NOT_THE_API.
    """
    if status in (401, 403):
        return AUTH
    if status in (408, 429) or status >= 500:
        return TRANSIENT
    if code is None:
        return NOT_THE_API
    if status == 404:
        return NOT_FOUND if code == CODE_NOT_FOUND else NOT_THE_API
    return PERMANENT


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a `Retry-After` header (delta-seconds form; dates are rare from APIs)."""
    if not value:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def error_from_response(response: Response) -> ApiError:
    """An ApiError from a non-2xx answer, keeping the service's gRPC code and message."""
    code: int | None = None
    message = response.reason or "error"
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        raw_code = body.get("code")
        if isinstance(raw_code, int):
            code = raw_code
        if isinstance(body.get("message"), str) and body["message"]:
            message = body["message"]
    if code is None and response.status_code < 500:
        message = (
            f"{response.url} answered HTTP {response.status_code} without the API's error body"
        )
    return ApiError(
        kind=classify(response.status_code, code),
        message=message,
        status=response.status_code,
        code=code,
        retry_after=parse_retry_after(response.headers.get("Retry-After")),
        request_id=response.headers.get("x-request-id"),
    )


class RecognitionClient:
    """Talks to the recognition and operations endpoints with one credential.

    The Authorization header comes from a credentials provider (built from `settings` unless
    given), asked afresh for every request so that renewed IAM tokens are picked up.
    """

    def __init__(
        self,
        settings: SpeechKit,
        transport: Transport | None = None,
        credentials: credentials_module.Credentials | None = None,
    ):
        self.settings = settings
        self.transport = transport if transport is not None else Transport()
        self.credentials = (
            credentials if credentials is not None else credentials_module.from_settings(settings)
        )

    def close(self) -> None:
        self.transport.close()
        self.credentials.close()

    def _headers(self) -> dict[str, str]:
        """Headers of one request; ApiError (nothing was sent) when there is no token."""
        try:
            authorization = self.credentials.authorization_header()
        except credentials_module.CredentialsError as error:
            raise ApiError(AUTH if error.auth else TRANSIENT, str(error)) from None
        return {
            "User-Agent": USER_AGENT,
            "Authorization": authorization,
            "x-client-request-id": str(uuid.uuid4()),
        }

    def _request(
        self,
        method: str,
        url: str,
        *,
        body: dict[str, Any] | None = None,
        unreachable: str,
        submission: bool = False,
    ) -> Response:
        """Send one call, with `body` as JSON; its answer, whatever the status. A 401 marks the
        token refused (the next call renews it). No answer is an ApiError saying `unreachable`:
        TRANSIENT, but AMBIGUOUS for a `submission` that may have left (an operation may exist).
        """
        headers = self._headers()
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            response = self.transport.request(
                method, url, headers=headers, body=data,
                timeout=self.settings.request_timeout_seconds,
            )  # fmt: skip
        except TransportError as error:
            kind = AMBIGUOUS if submission and error.sent else TRANSIENT
            raise ApiError(kind, f"{unreachable} unreachable: {error.reason}") from None
        if response.status_code == 401:
            self.credentials.refused(headers["Authorization"])
        return response

    def submit(self, audio_uri: str, specification: dict[str, Any]) -> dict[str, Any]:
        """POST longRunningRecognize; the operation object on success, else ApiError.

        A failure after the request left us is AMBIGUOUS: the service may have created (and will
        bill) an operation we never heard of. The caller decides; it is never retried here.
        """
        body = {"config": {"specification": specification}, "audio": {"uri": audio_uri}}
        return self.post_operation(self.settings.recognize_url, body, submission=True)

    def submit_without_audio(self, specification: dict[str, Any]) -> dict[str, Any]:
        """POST longRunningRecognize with no `audio`: the probe of `check`.

        The API refuses such a request (400, code 3) once it has accepted the credentials, so
        nothing is created or billed; its answer shows whether `recognize_url` is the API.
        """
        body = {"config": {"specification": specification}}
        return self.post_operation(self.settings.recognize_url, body, submission=False)

    def post_operation(self, url: str, body: dict[str, Any], *, submission: bool) -> dict[str, Any]:
        """POST `body`; the operation it answers with, else ApiError. For a `submission`, a
        failure after the request left us is AMBIGUOUS (an operation may exist)."""
        response = self._request(
            "POST", url, body=body, unreachable="recognition API", submission=submission
        )
        return self._operation(response)

    def get_operation(self, operation_id: str) -> dict[str, Any]:
        """GET the operation; ApiError with kind NOT_FOUND only when the API says it has none."""
        url = f"{self.settings.operations_url}/{operation_id}"
        return self._operation(self._request("GET", url, unreachable="operations API"))

    def _operation(self, response: Response) -> dict[str, Any]:
        if response.status_code != 200:
            raise error_from_response(response)
        try:
            operation = response.json()
        except ValueError:
            raise ApiError(
                NOT_THE_API, f"{response.url} answered with something that is not JSON", status=200
            ) from None
        if not isinstance(operation, dict) or not isinstance(operation.get("id"), str):
            raise ApiError(
                NOT_THE_API, f"{response.url} answered without an operation id", status=200
            )
        return operation


class V2Backend:
    """`daemon.speechkit.Backend` over API v2: the result is the finished operation itself."""

    def __init__(self, client: RecognitionClient) -> None:
        self.client = client

    def submit(self, audio: str | Path, specification: Mapping[str, Any]) -> str:
        if isinstance(audio, Path):  # the config requires storage with v2
            raise ApiError(PERMANENT, "API v2 takes audio only by link; configure storage")
        return str(self.client.submit(audio, dict(specification))["id"])

    def status(self, operation_id: str) -> Status:
        """The operation's status in the backends' plain words; the shape of a done one is
        checked here, so that only a well-formed result is ever called finished."""
        operation = self.client.get_operation(operation_id)
        if not operation.get("done"):
            return Running(operation)
        ended = documented_failure(operation)
        if isinstance(ended, Failed):
            return ended
        problem = transcripts.result_problem(operation)  # names a malformed `error` too
        if problem is not None:
            return Malformed(operation, problem)
        kind = operation["response"].get("@type")  # result_problem: `response` is an object
        if kind is not None and kind != RESPONSE_TYPE:
            return Malformed(operation, f"response is a {kind}, not API v2's result")
        return Finished(operation)

    def result(self, finished: Finished, specification: Mapping[str, Any]) -> dict[str, Any]:
        return dict(finished.operation)

    def forget(self, operation_id: str) -> None:
        """v2 cannot remove results early: they expire 3 days after completion."""

    def close(self) -> None:
        self.client.close()
