"""The whisper engine: real speech recognition with faster-whisper (CTranslate2, int8 on CPU).

Each channel is decoded with FFmpeg's decoders (PyAV), resampled to 16 kHz mono float32 and
recognised on its own, as the service recognises a stereo call channel by channel. The
request's languageCode decides the language (`auto`: whisper detects it per channel). Silence
and noise give no utterances: faster-whisper's voice activity filter (Silero VAD, shipped
inside its wheel) drops them before anything is decoded.

Decoding is a beam search at temperature 0, without conditioning on the previous segment, and
decodes a segment again at a higher temperature only when it repeats itself, so a misheard
segment cannot start a loop and hard audio costs at most three passes. Needs the `whisper`
extra (faster-whisper, numpy).
"""

from __future__ import annotations

import io
import logging
import math
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import av
import av.error

from speechkit_local import logic
from speechkit_local.audio import PCM_BYTES_PER_SAMPLE, AudioFacts, InvalidAudio
from speechkit_local.engines import EngineUnavailableError
from speechkit_local.engines import models as models_module
from speechkit_local.recognition import NANOSECONDS_PER_SECOND, Utterance, Word

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

LOGGER = logging.getLogger("speechkit_local")

SAMPLE_RATE = 16_000  # what whisper listens at
COMPUTE_TYPE = "int8"  # the CPU's fastest; its accuracy loss is below what we can measure
BEAM_SIZE = 5  # faster-whisper's default; greedy decoding lost words of the Russian fixtures
# A segment that repeats itself (compression ratio over 2.4) is decoded again, hotter; an
# unsure one is not (log_prob_threshold=None): on hard audio every retry cost as much as the
# first pass and rarely found better words, so one recording could take 4x its length.
FALLBACK_TEMPERATURES = (0.0, 0.4, 0.8)
MAX_DEFAULT_THREADS = 4  # CTranslate2 gains little beyond 4 threads for one stream
EXTRA_INSTALL_HINT = "install the engine with: pip install 'speechkit-watch[whisper]'"


@dataclass(frozen=True)
class RecognizedWord:
    """A word as whisper reports it: its text with spacing and punctuation, times in seconds."""

    text: str
    start: float
    end: float
    probability: float


@dataclass(frozen=True)
class RecognizedSegment:
    text: str
    avg_logprob: float
    words: tuple[RecognizedWord, ...]


def whisper_language(language_code: str) -> str | None:
    """The whisper language of an API languageCode: "ru-RU" → "ru"; `auto` → None (detect)."""
    if language_code.lower() == logic.AUTO_LANGUAGE:
        return None
    return language_code.split("-", 1)[0].lower()


def _nanoseconds(seconds: float) -> int:
    return round(seconds * NANOSECONDS_PER_SECOND)


def segment_utterance(
    channel: int, segment: RecognizedSegment, *, not_before_ns: int, duration_ns: int
) -> Utterance | None:
    """One utterance from one whisper segment, or None if it holds no word.

    Raw words are lower case without punctuation (a token of punctuation alone is dropped, a
    token that splits in two shares its time); times are clamped into
    [not_before_ns, duration_ns] and never go backwards, whatever the aligner said.
    """
    words: list[Word] = []
    cursor = max(0, not_before_ns)
    for recognized in segment.words:
        parts = logic.normalize_words(recognized.text)
        if not parts:
            continue
        start = min(max(_nanoseconds(recognized.start), cursor), duration_ns)
        end = min(max(_nanoseconds(recognized.end), start), duration_ns)
        for index, part in enumerate(parts):
            part_start = start + (end - start) * index // len(parts)
            part_end = start + (end - start) * (index + 1) // len(parts)
            words.append(Word(part, part_start, part_end, round(recognized.probability, 3)))
        cursor = end
    if not words:
        return None
    confidence = round(min(1.0, max(0.0, math.exp(segment.avg_logprob))), 3)
    return Utterance(
        channel=channel,
        words=tuple(words),
        normalized_text=" ".join(segment.text.split()),
        start_ns=words[0].start_ns,
        end_ns=words[-1].end_ns,
        confidence=confidence,
    )


def channel_utterances(
    channel: int, segments: Sequence[RecognizedSegment], duration_ns: int
) -> list[Utterance]:
    utterances: list[Utterance] = []
    cursor = 0
    for segment in segments:
        utterance = segment_utterance(
            channel, segment, not_before_ns=cursor, duration_ns=duration_ns
        )
        if utterance is not None:
            utterances.append(utterance)
            cursor = utterance.end_ns
    return utterances


# ---------------------------------------------------------------------------- decoding


def _layout(channels: int) -> str:
    return "stereo" if channels == 2 else "mono"


def decode_channels(
    data: bytes, request: logic.RecognizeRequest, channels: int
) -> list[npt.NDArray[np.float32]]:
    """Each channel of `data` as 16 kHz float32 samples in [-1, 1]; InvalidAudio if unreadable."""
    import numpy as np  # noqa: PLC0415 - the whisper extra brings numpy

    resampler = av.AudioResampler(format="fltp", layout=_layout(channels), rate=SAMPLE_RATE)
    blocks: list[npt.NDArray[Any]] = []
    try:
        for frame in _frames(data, request, channels):
            blocks.extend(block.to_ndarray() for block in resampler.resample(frame))
        blocks.extend(block.to_ndarray() for block in resampler.resample(None))
    except (av.error.FFmpegError, ValueError) as error:
        raise InvalidAudio(f"cannot decode for recognition: {error}") from None
    if not blocks:
        raise InvalidAudio("no audio samples could be decoded")
    joined = np.concatenate(blocks, axis=1).astype(np.float32, copy=False)
    return [np.ascontiguousarray(joined[index]) for index in range(joined.shape[0])]


def _frames(data: bytes, request: logic.RecognizeRequest, channels: int) -> Any:
    """Decoded frames of `data`: from its container, or one frame of raw LINEAR16_PCM."""
    import numpy as np  # noqa: PLC0415 - the whisper extra brings numpy

    if request.audio_encoding == "LINEAR16_PCM":
        usable = len(data) - len(data) % (PCM_BYTES_PER_SAMPLE * channels)
        samples = np.frombuffer(data[:usable], dtype="<i2").reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout=_layout(channels))
        frame.sample_rate = request.sample_rate_hertz or 8000
        yield frame
        return
    with av.open(io.BytesIO(data), mode="r") as container:
        yield from container.decode(container.streams.audio[0])


# ---------------------------------------------------------------------------- the engine


def default_threads() -> int:
    return max(1, min(MAX_DEFAULT_THREADS, os.cpu_count() or 1))


class WhisperEngine:
    name = "whisper"
    capacity = 1  # one recognition at a time uses every thread it is given

    def __init__(
        self, model: Any, folder: models_module.ModelFolder, threads: int, *, version: str
    ) -> None:
        self._model = model
        self._version = version
        self._folder = folder
        self._threads = threads

    @classmethod
    def load(cls, model: str | None, *, threads: int = 0) -> WhisperEngine:
        """Load the model once; EngineUnavailableError if the library or the model is missing."""
        try:
            import faster_whisper  # noqa: PLC0415 - the optional extra
            from faster_whisper import WhisperModel  # noqa: PLC0415 - the optional extra
        except ImportError as error:
            raise EngineUnavailableError(
                f"the whisper engine needs faster-whisper ({error}); {EXTRA_INSTALL_HINT}"
            ) from None
        try:
            folder = models_module.resolve_model(model or models_module.DEFAULT_MODEL)
        except models_module.ModelError as error:
            raise EngineUnavailableError(str(error)) from None
        threads = threads or default_threads()
        try:
            loaded = WhisperModel(
                str(folder.path),
                device="cpu",
                compute_type=COMPUTE_TYPE,
                cpu_threads=threads,
                num_workers=1,
                local_files_only=True,
            )
        except (RuntimeError, ValueError, OSError) as error:
            raise EngineUnavailableError(f"cannot load the model {folder.path}: {error}") from None
        return cls(loaded, folder, threads, version=faster_whisper.__version__)

    def describe(self) -> str:
        return (
            f"whisper (faster-whisper {self._version}, model {self._folder.name} at "
            f"{self._folder.path}, "
            f"{COMPUTE_TYPE}, {self._threads} threads)"
        )

    def recognize(
        self,
        data: bytes,
        facts: AudioFacts,
        request: logic.RecognizeRequest,
        stop: threading.Event,
    ) -> list[Utterance]:
        language = whisper_language(request.language_code)
        if self._folder.english_only:
            language = "en"
        utterances: list[Utterance] = []
        for channel, samples in enumerate(decode_channels(data, request, facts.channels)):
            duration_ns = len(samples) * NANOSECONDS_PER_SECOND // SAMPLE_RATE
            segments = self._transcribe(samples, language, stop)
            utterances.extend(channel_utterances(channel, segments, duration_ns))
            if stop.is_set():
                break
        return utterances

    def _transcribe(
        self, samples: npt.NDArray[np.float32], language: str | None, stop: threading.Event
    ) -> list[RecognizedSegment]:
        found, _ = self._model.transcribe(
            samples,
            language=language,
            task="transcribe",
            beam_size=BEAM_SIZE,
            word_timestamps=True,
            vad_filter=True,
            condition_on_previous_text=False,
            temperature=FALLBACK_TEMPERATURES,
            log_prob_threshold=None,
        )
        segments: list[RecognizedSegment] = []
        for segment in found:  # a generator: each step decodes one more segment
            words = tuple(
                RecognizedWord(word.word, word.start, word.end, word.probability)
                for word in segment.words or ()
            )
            segments.append(RecognizedSegment(segment.text, segment.avg_logprob, words))
            if stop.is_set():
                break
        return segments
