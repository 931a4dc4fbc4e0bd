"""The SpeechKit v3 asynchronous recognition API: `recognizeFileAsync`, operations, then the
results by `getRecognition` (a stream of JSON objects, one per line) and `deleteRecognition`.

One implementation of `daemon.speechkit.Backend`, on the v2 adapter's client (the same
credentials, timeouts, error classification and operations endpoint). The audio goes by link
(with storage) or inline as base64 `content` (without), up to the request limit. The result
document is `daemon.render.v3`'s: the finished operation and the messages, unchanged.
"""

from __future__ import annotations

import base64
import json
import logging
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from daemon.render import v3 as results
from daemon.speechkit import Finished, Malformed, Running, Status, documented_failure
from daemon.speechkit.v2 import NOT_THE_API, ApiError, RecognitionClient, error_from_response
from daemon.transport import Response

log = logging.getLogger(__name__)

# A request holds at most 60 MB; base64 makes 3 bytes 4, and the rest of the body is small.
MAX_REQUEST_BYTES = 60 * 1000 * 1000  # decimal MB: the safe reading of the documented limit
REQUEST_ROOM_BYTES = 64 * 1024  # the JSON around `content`, with room to spare
MAX_INLINE_AUDIO_BYTES = (MAX_REQUEST_BYTES - REQUEST_ROOM_BYTES) // 4 * 3  # 44,950,848 bytes
# How `check`, the refusal and the docs give that limit: rounded down, so never more than it is.
INLINE_LIMIT = f"{MAX_INLINE_AUDIO_BYTES // 100_000 / 10:.1f} MB"


def inline_refusal(size: int) -> str | None:
    """Why audio of `size` bytes cannot go inline (without storage), or None if it can."""
    if size <= MAX_INLINE_AUDIO_BYTES:
        return None
    return (
        f"{size / 1e6:.1f} MB of audio is more than API v3 takes inline in a request "
        f"({INLINE_LIMIT}); configure `storage` (a bucket) so that large "
        "files go by link"
    )


def request_body(audio: str | Path, specification: Mapping[str, Any]) -> dict[str, Any]:
    """The recognizeFileAsync body: the settings, and the audio by `uri` (a link) or inline."""
    body = dict(specification)
    if isinstance(audio, Path):
        body["content"] = base64.b64encode(audio.read_bytes()).decode("ascii")
    else:
        body["uri"] = audio
    return body


def parse_stream(text: str) -> list[Any]:
    """The messages of a getRecognition answer, one JSON value per line, in order.

    ValueError names the first line that is not JSON. A body that is one JSON list (as some
    gateways send a server stream) is read as that list.
    """
    stripped = text.strip()
    if stripped.startswith("["):
        whole = json.loads(stripped)
        if isinstance(whole, list):
            return whole
    messages = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            messages.append(json.loads(line))
        except ValueError:
            raise ValueError(f"line {number} of the getRecognition answer is not JSON") from None
    return messages


class V3Client(RecognitionClient):
    """The v3 endpoints under `speechkit.stt_v3_url`; the operations endpoint as for v2."""

    url_key = "speechkit.stt_v3_url"

    def _url(self, method: str) -> str:
        return f"{self.settings.stt_v3_url}/{method}"

    def submit_file(self, audio: str | Path, specification: Mapping[str, Any]) -> dict[str, Any]:
        """POST recognizeFileAsync; the operation. A failure after the request left us is
        AMBIGUOUS (an operation may exist that we never heard of); never retried here."""
        body = request_body(audio, specification)
        return self.post_operation(self._url("recognizeFileAsync"), body, submission=True)

    def submit_without_audio(self, specification: dict[str, Any]) -> dict[str, Any]:
        """POST recognizeFileAsync with neither `uri` nor `content`: the probe of `check`,
        refused (400, code 3) once the credentials are accepted; nothing is created or billed."""
        body = dict(specification)
        return self.post_operation(self._url("recognizeFileAsync"), body, submission=False)

    def _results(self, method: str, name: str, operation_id: str) -> Response:
        """One call about an operation's results; the 200 answer, else ApiError."""
        url = f"{self._url(name)}?{urllib.parse.urlencode({'operationId': operation_id})}"
        response = self._request(method, url, unreachable="recognition API")
        if response.status_code != 200:
            failure = error_from_response(response)
            failure.url_key = self.url_key  # not the operations endpoint: a wrong URL is this key
            raise failure
        return response

    def get_recognition(self, operation_id: str) -> list[Any]:
        """GET getRecognition, read completely; the messages in order. ValueError when the
        answer is not the documented stream (see parse_stream)."""
        response = self._results("GET", "getRecognition", operation_id)  # read whole
        try:
            text = response.content.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError("the getRecognition answer is not UTF-8") from None
        return parse_stream(text)

    def delete_recognition(self, operation_id: str) -> None:
        """DELETE deleteRecognition: the results are gone from the service."""
        self._results("DELETE", "deleteRecognition", operation_id)


class V3Backend:
    """`daemon.speechkit.Backend` over API v3: a done operation's result is fetched with
    getRecognition when its status is asked, so that a garbled stream counts as a malformed
    answer (checked again, then failed) and a forgotten one as an unknown operation."""

    def __init__(self, client: V3Client) -> None:
        self.client = client

    def submit(self, audio: str | Path, specification: Mapping[str, Any]) -> str:
        return str(self.client.submit_file(audio, specification)["id"])

    def status(self, operation_id: str) -> Status:
        operation = self.client.get_operation(operation_id)
        if not operation.get("done"):
            return Running(operation)
        ended = documented_failure(operation)
        if ended is not None:
            return ended
        try:
            messages = self.client.get_recognition(operation_id)
        except ValueError as error:
            return Malformed(operation, str(error))
        document = results.document(operation, messages, speakers=False)
        problem = results.problem(document)
        if problem is not None:
            return Malformed(operation, problem)
        return Finished(document)

    def result(self, finished: Finished, specification: Mapping[str, Any]) -> dict[str, Any]:
        speakers = "speakerLabeling" in specification
        return {**finished.operation, results.SPEAKERS: speakers}

    def forget(self, operation_id: str) -> None:
        """deleteRecognition; a failure is logged (the service drops results after 3 days)."""
        try:
            self.client.delete_recognition(operation_id)
        except ApiError as error:
            log.warning(
                "could not delete the results of operation %s from the service (%s); they "
                "expire there 3 days after completion",
                operation_id, error,
            )  # fmt: skip

    def close(self) -> None:
        self.client.close()


__all__ = [
    "INLINE_LIMIT",
    "MAX_INLINE_AUDIO_BYTES",
    "NOT_THE_API",
    "V3Backend",
    "V3Client",
    "inline_refusal",
]
