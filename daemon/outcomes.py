"""One vocabulary for what went wrong with a call to a service, whichever adapter made it.

Object storage and the recognition API report failures as `Failure`s of one set of kinds, each
naming the service, so that the steps decide what to do (retry, pause that service, fail the
file, submit again) from the kind and the service, never from message text or stage names.
"""

from __future__ import annotations

import enum


class Kind(enum.StrEnum):
    TRANSIENT = "transient"  # retry later with backoff (network, 5xx, 429), `retry_after` a floor
    AUTH = "auth"  # the service refused our credentials: pause calls to it, never fail a file
    PERMANENT = "permanent"  # the request itself is wrong for this file: fail the file
    NOT_FOUND = "not_found"  # the API's own word that an operation does not exist (404, code 5)
    AMBIGUOUS = "ambiguous"  # a submission may have reached the service; its answer was lost
    # Something answered that is not the API (a bare 404, an HTML page, a wrong URL): says nothing
    # about the file; pause calls to that URL and probe again later.
    NOT_THE_API = "not_the_api"


class Service(enum.StrEnum):
    """Who failed: each service is paused on its own when it refuses our credentials."""

    STORAGE = "storage"
    RECOGNITION = "recognition API"


class Failure(Exception):  # noqa: N818 - the vocabulary's own word: what an adapter reports
    """A call to `service` failed in a way of `kind`; `message` never holds a secret or a link."""

    def __init__(
        self,
        kind: Kind | str,
        message: str,
        *,
        service: Service,
        status: int | None = None,
        code: int | None = None,
        retry_after: float | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = Kind(kind)
        self.message = message
        self.service = service
        self.status = status
        self.code = code
        self.retry_after = retry_after
        self.request_id = request_id

    @property
    def auth(self) -> bool:
        return self.kind == Kind.AUTH

    def __str__(self) -> str:
        parts = [self.message]
        if self.status is not None:
            parts.append(f"HTTP {self.status}")
        if self.code is not None:
            parts.append(f"code {self.code}")
        if self.request_id:
            parts.append(f"x-request-id {self.request_id}")
        return "; ".join(parts)
