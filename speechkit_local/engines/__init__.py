"""Recognition engines of the local server: what turns decoded audio into `Utterance`s.

- `echo` (the default): returns the text stored in the file's Opus comments, for deterministic
  tests and fault scenarios (`engines.echo`).
- `whisper`: real speech recognition with faster-whisper, int8 on the CPU (`engines.whisper`,
  the `whisper` extra); its model comes from installed packages or a folder (`engines.models`).

Every engine answers `recognize(data, facts, request, stop)` with utterances; the API modules
build their answers from them (`speechkit_local.recognition`). `capacity` is how many
recognitions the engine runs at once; the service queues the rest.
"""

from __future__ import annotations

import threading
from typing import Protocol

from speechkit_local.audio import AudioFacts
from speechkit_local.logic import RecognizeRequest
from speechkit_local.recognition import Utterance

ECHO = "echo"
WHISPER = "whisper"
ENGINE_NAMES = (ECHO, WHISPER)


class EngineUnavailableError(Exception):
    """The engine cannot start (library or model missing or damaged); the message says why."""


class Engine(Protocol):
    name: str
    capacity: int  # recognitions at once; the service queues the rest

    def describe(self) -> str:
        """One line for the log and the stats: engine, model, threads."""
        ...

    def recognize(
        self, data: bytes, facts: AudioFacts, request: RecognizeRequest, stop: threading.Event
    ) -> list[Utterance]:
        """Utterances of every channel of `data` (already decoded once into `facts`).

        Raises audio.InvalidAudio if the audio cannot be read after all; may return early
        (with what it has) once `stop` is set.
        """
        ...


def load_engine(name: str, *, model: str | None = None, threads: int = 0) -> Engine:
    """The engine called `name`, its model loaded; EngineUnavailableError naming the problem."""
    if name == ECHO:
        from speechkit_local.engines.echo import EchoEngine  # noqa: PLC0415 - one engine loads

        return EchoEngine()
    if name == WHISPER:
        from speechkit_local.engines.whisper import WhisperEngine  # noqa: PLC0415 - optional

        return WhisperEngine.load(model, threads=threads)
    raise EngineUnavailableError(f"unknown engine {name!r}; known: {', '.join(ENGINE_NAMES)}")
