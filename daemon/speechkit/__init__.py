"""Recognition backends: what the steps need of a speech recognition API, whichever it is.

A backend submits a recognition of audio behind a link, tells the status of an operation as one
of a few plain answers, gives the result document of a finished one (what NAME.json holds and
the outputs are rendered from), and forgets an operation's results early where the API can.
`v2` is SpeechKit's API v2 (`longRunningRecognize` + operations), `v3` its API v3
(`recognizeFileAsync` + operations + `getRecognition`/`deleteRecognition`; the audio by link or
inline); `backends.Backends` picks one by `speechkit.api`, and the other for operations
submitted before it changed. Failures are the `Failure`s of `daemon.outcomes`, with the
recognition API as their service.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol


@dataclass(frozen=True)
class Running:
    """Not done yet."""

    operation: Mapping[str, Any]


@dataclass(frozen=True)
class Finished:
    """Done with a well-formed result (possibly of no speech)."""

    operation: Mapping[str, Any]


@dataclass(frozen=True)
class Failed:
    """Done, and the service says it could not recognise it (a gRPC code and its message)."""

    operation: Mapping[str, Any]
    code: int
    message: str


@dataclass(frozen=True)
class Malformed:
    """Done, but the answer is neither a well-formed result nor a documented failure."""

    operation: Mapping[str, Any]
    problem: str  # what is malformed, e.g. "response.chunks is a string, not a list"


Status = Running | Finished | Failed | Malformed


def documented_failure(operation: Mapping[str, Any]) -> Failed | Malformed | None:
    """A done operation's `error` as the backends report it: Failed when it is the documented
    failure (an object with an integer code), Malformed when it is something else, else None."""
    failure = operation.get("error")
    if failure is None:
        return None
    code = failure.get("code") if isinstance(failure, dict) else None
    if not isinstance(code, int) or isinstance(code, bool):
        return Malformed(operation, "error is not an object with an integer code")
    return Failed(operation, code, str(failure.get("message") or "recognition failed"))


class Backend(Protocol):
    def submit(self, audio: str | Path, specification: Mapping[str, Any]) -> str:
        """Start a recognition of the audio behind a link (str) or, where the API takes it
        inline, of a local file (Path); the operation id. Never retried inside: a lost answer
        is the caller's to decide (an AMBIGUOUS failure)."""
        ...

    def status(self, operation_id: str) -> Status: ...

    def result(self, finished: Finished, specification: Mapping[str, Any]) -> dict[str, Any]:
        """The result document of a finished operation submitted with `specification`: saved
        as NAME.json, rendered into the outputs."""
        ...

    def forget(self, operation_id: str) -> None:
        """Remove the results early where the API can; else nothing."""
        ...

    def close(self) -> None: ...
