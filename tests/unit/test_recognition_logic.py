"""How API errors are classified: what the daemon does next depends on it."""

from __future__ import annotations

import pytest
import requests
import urllib3.exceptions

from daemon import recognition


@pytest.mark.parametrize(
    ("status", "kind"),
    [(400, "permanent"), (401, "auth"), (403, "auth"), (404, "not_found"), (429, "transient"),
     (500, "transient"), (503, "transient"), (504, "transient"), (409, "permanent")],
)  # fmt: skip
def test_status_classification(status: int, kind: str) -> None:
    assert recognition.classify(status) == kind


def test_retry_after_parsing() -> None:
    assert recognition.parse_retry_after("7") == 7.0
    assert recognition.parse_retry_after(" 1.5 ") == 1.5
    assert recognition.parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") is None
    assert recognition.parse_retry_after(None) is None
    assert recognition.parse_retry_after("-3") is None


def test_a_refused_connection_means_the_request_was_not_sent() -> None:
    refused = urllib3.exceptions.NewConnectionError(None, "Connection refused")  # type: ignore[arg-type]
    error = requests.ConnectionError(urllib3.exceptions.MaxRetryError(None, "/x", refused))  # type: ignore[arg-type]
    assert not recognition.request_was_sent(error)
    assert not recognition.request_was_sent(requests.ConnectTimeout())


def test_a_lost_answer_is_ambiguous() -> None:
    assert recognition.request_was_sent(requests.ReadTimeout())
    dropped = requests.ConnectionError(
        urllib3.exceptions.ProtocolError("Connection aborted.", ConnectionResetError())
    )
    assert recognition.request_was_sent(dropped)
