"""How API errors are classified: what the daemon does next depends on it."""

from __future__ import annotations

import pytest
import urllib3.exceptions
from urllib3._collections import HTTPHeaderDict

from daemon import transport
from daemon.speechkit import v2 as recognition


@pytest.mark.parametrize(
    ("status", "code", "kind"),
    [(400, 3, "permanent"), (401, 16, "auth"), (403, 7, "auth"), (404, 5, "not_found"),
     (429, 8, "transient"), (500, 13, "transient"), (503, 14, "transient"),
     (504, 4, "transient"), (409, 10, "permanent"),
     # The same statuses without the API's JSON error body come from something else.
     (401, None, "auth"), (500, None, "transient"), (404, None, "not_the_api"),
     (400, None, "not_the_api"), (405, None, "not_the_api"),
     # A 404 whose body has another code is not the API's "no such operation" either.
     (404, 12, "not_the_api")],
)  # fmt: skip
def test_status_classification(status: int, code: int | None, kind: str) -> None:
    assert recognition.classify(status, code) == kind


def answer(status: int, body: bytes, content_type: str, **headers: str) -> transport.Response:
    return transport.Response(
        "http://api.example/operations/e03abc", status, "Not Found",
        HTTPHeaderDict({"Content-Type": content_type, **headers}), body,
    )  # fmt: skip


def test_a_bare_404_names_the_url_and_is_not_the_api() -> None:
    error = recognition.error_from_response(answer(404, b"<h1>Not Found</h1>", "text/html"))
    assert error.kind == recognition.NOT_THE_API
    assert "http://api.example/operations/e03abc answered HTTP 404" in error.message
    assert error.code is None


def test_only_the_apis_code_5_means_the_operation_is_unknown() -> None:
    body = b'{"code": 5, "message": "Operation not found", "details": []}'
    error = recognition.error_from_response(answer(404, body, "application/json"))
    assert (error.kind, error.code, error.message) == (
        recognition.NOT_FOUND,
        5,
        "Operation not found",
    )


def test_retry_after_parsing() -> None:
    assert recognition.parse_retry_after("7") == 7.0
    assert recognition.parse_retry_after(" 1.5 ") == 1.5
    assert recognition.parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") is None
    assert recognition.parse_retry_after(None) is None
    assert recognition.parse_retry_after("-3") is None


def test_retry_after_and_the_request_id_are_read_whatever_the_header_case() -> None:
    body = b'{"code": 8, "message": "Too many requests"}'
    error = recognition.error_from_response(
        answer(429, body, "application/json", **{"retry-after": "3", "X-Request-Id": "r1"})
    )
    assert (error.kind, error.retry_after, error.request_id) == (recognition.TRANSIENT, 3.0, "r1")


def test_a_refused_connection_means_the_request_was_not_sent() -> None:
    refused = urllib3.exceptions.NewConnectionError(None, "Connection refused")  # type: ignore[arg-type]
    assert not transport.was_sent(refused)
    assert not transport.was_sent(urllib3.exceptions.MaxRetryError(None, "/x", refused))  # type: ignore[arg-type]
    assert not transport.was_sent(urllib3.exceptions.ConnectTimeoutError())
    assert transport.describe(refused) == "connection refused"


def test_a_lost_answer_is_ambiguous() -> None:
    assert transport.was_sent(urllib3.exceptions.ReadTimeoutError(None, "/x", "read timed out"))  # type: ignore[arg-type]
    dropped = urllib3.exceptions.ProtocolError("Connection aborted.", ConnectionResetError())
    assert transport.was_sent(dropped)
    assert transport.describe(dropped) == "connection closed without an answer"
