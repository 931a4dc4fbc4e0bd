"""Which recognition backend a config asks for (`speechkit.api`), and which one a file version
recorded under either API needs (`api_of` its specification)."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from daemon.config import SpeechKit
from daemon.speechkit import Backend
from daemon.speechkit.v2 import RecognitionClient, V2Backend
from daemon.speechkit.v3 import V3Backend, V3Client

APIS = ("v2", "v3")


def api_of(specification: Mapping[str, Any]) -> str:
    """The API a recorded specification is a request of: v3's has `recognitionModel`."""
    return "v3" if "recognitionModel" in specification else "v2"


def _build(
    api: str, settings: SpeechKit, client: RecognitionClient | None = None
) -> V2Backend | V3Backend:
    """A backend of `api`; on `client`'s transport and credentials when given."""
    transport = client.transport if client is not None else None
    credentials = client.credentials if client is not None else None
    if api == "v3":
        return V3Backend(V3Client(settings, transport, credentials))
    return V2Backend(RecognitionClient(settings, transport, credentials))


class Backends:
    """The configured API's backend, and the other API's for file versions that were submitted
    under it before `speechkit.api` changed: built when first needed, on the same transport and
    credentials (so it is closed with the configured one). Its operations are polled and read
    there, never by the new API's backend, which would misread them."""

    def __init__(self, settings: SpeechKit) -> None:
        self.settings = settings
        self.configured = _build(settings.api, settings)
        self._others: dict[str, Backend] = {}
        self._lock = threading.Lock()

    def for_api(self, api: str) -> Backend:
        if api == self.settings.api:
            return self.configured
        with self._lock:
            if api not in self._others:
                self._others[api] = _build(api, self.settings, self.configured.client)
            return self._others[api]

    def close(self) -> None:
        self.configured.close()  # the others share its transport and credentials


def client_for(settings: SpeechKit) -> type[RecognitionClient]:
    """The client class whose probes `check` runs for the configured API."""
    return V3Client if settings.api == "v3" else RecognitionClient
