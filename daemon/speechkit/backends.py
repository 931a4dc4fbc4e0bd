"""Which recognition backend a config asks for (`speechkit.api`)."""

from __future__ import annotations

from daemon.config import SpeechKit
from daemon.speechkit import Backend
from daemon.speechkit.v2 import RecognitionClient, V2Backend
from daemon.speechkit.v3 import V3Backend, V3Client


def for_settings(settings: SpeechKit) -> Backend:
    if settings.api == "v3":
        return V3Backend(V3Client(settings))
    return V2Backend(RecognitionClient(settings))


def client_for(settings: SpeechKit) -> type[RecognitionClient]:
    """The client class whose probes `check` runs for the configured API."""
    return V3Client if settings.api == "v3" else RecognitionClient
