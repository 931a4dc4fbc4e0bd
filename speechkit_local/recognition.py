"""What an engine recognised, apart from the API that reports it.

Every engine (echo, which reads transcripts stored in the file; a real recogniser) returns
`Utterance`s: one per segment of speech on one channel, with raw words and their times. Each API
builds its own answer from them (v2: `chunks`), so every engine serves every API and the answer
shapes live in one place each.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

NANOSECONDS_PER_SECOND = 1_000_000_000


@dataclass(frozen=True)
class Word:
    text: str  # raw: lower case, no punctuation (what `words[]` always holds)
    start_ns: int
    end_ns: int
    confidence: float = 1.0


@dataclass(frozen=True)
class Utterance:
    """One recognised segment of one channel.

    `normalized_text` is the text with capitals and punctuation (what literature_text shows);
    the raw text is the words joined. `speaker` is a 0-based speaker label where the engine
    separates speakers, else None.
    """

    channel: int  # 0-based
    words: tuple[Word, ...]
    normalized_text: str
    start_ns: int
    end_ns: int
    confidence: float = 1.0
    speaker: int | None = None

    @property
    def raw_text(self) -> str:
        return " ".join(word.text for word in self.words)


def in_time_order(utterances: Iterable[Utterance]) -> list[Utterance]:
    """By start time, then channel: the order the service reports segments in."""
    return sorted(utterances, key=lambda utterance: (utterance.start_ns, utterance.channel))


def format_duration(nanoseconds: int) -> str:
    """A protobuf JSON Duration: "2s", "1.200s", "0.000500s", "0.879999999s".

    Protobuf writes 0, 3, 6 or 9 fractional digits, whichever is exact; so does the service.
    """
    sign = "-" if nanoseconds < 0 else ""
    seconds, nanos = divmod(abs(nanoseconds), NANOSECONDS_PER_SECOND)
    if nanos == 0:
        fraction = ""
    elif nanos % 1_000_000 == 0:
        fraction = f".{nanos // 1_000_000:03d}"
    elif nanos % 1_000 == 0:
        fraction = f".{nanos // 1_000:06d}"
    else:
        fraction = f".{nanos:09d}"
    return f"{sign}{seconds}{fraction}s"


def _number(value: float) -> float | int:
    """1.0 → 1, as protobuf's JSON writes a whole float (the service sends `"confidence": 1`)."""
    return int(value) if float(value).is_integer() else value


def v2_chunks(utterances: Sequence[Utterance], *, literature_text: bool) -> list[dict[str, Any]]:
    """API v2 `chunks`: one per utterance in time order, `channelTag` 1-based as a string.

    `words[]` are always raw; the chunk text is normalised only with literature_text (the real
    service's v3 keeps raw words apart from the normalised text, and v2's documentation promises
    no more, so clients must not rely on normalised words).
    """
    chunks: list[dict[str, Any]] = []
    for utterance in in_time_order(utterances):
        if not utterance.words:
            continue
        words = [
            {
                "startTime": format_duration(word.start_ns),
                "endTime": format_duration(word.end_ns),
                "word": word.text,
                "confidence": _number(word.confidence),
            }
            for word in utterance.words
        ]
        text = utterance.normalized_text if literature_text else utterance.raw_text
        alternative = {"words": words, "text": text, "confidence": _number(utterance.confidence)}
        chunks.append({"alternatives": [alternative], "channelTag": str(utterance.channel + 1)})
    return chunks


def _milliseconds(nanoseconds: int) -> str:
    """An int64 of milliseconds as v3's JSON writes it: a string."""
    return str(nanoseconds // 1_000_000)


def v3_messages(
    utterances: Sequence[Utterance], *, speaker_labeling: bool, literature_text: bool
) -> list[dict[str, Any]]:
    """API v3 `getRecognition` messages: per utterance in time order a `final` (raw words, times
    in ms), an `eouUpdate` and a `finalRefinement` (the normalized text), each `{"result": ...}`.

    `channelTag` is 0-based and a string, as are all int64 values. With speaker labeling the
    speaker is reported through `channelTag` where the engine separated speakers (mono audio);
    else the channel. `finalIndex` counts the finals of each tag.
    """
    messages: list[dict[str, Any]] = []
    next_index: dict[str, int] = {}
    session = {"uuid": "local-session", "userRequestId": ""}
    for utterance in in_time_order(utterances):
        if not utterance.words:
            continue
        labelled = speaker_labeling and utterance.speaker is not None
        tag = str(utterance.speaker if labelled else utterance.channel)
        index = next_index.get(tag, 0)
        next_index[tag] = index + 1
        start, end = _milliseconds(utterance.start_ns), _milliseconds(utterance.end_ns)
        cursors = {
            "receivedDataMs": end, "resetTimeMs": "0", "partialTimeMs": end,
            "finalTimeMs": end, "finalIndex": str(index), "eouTimeMs": end,
        }  # fmt: skip
        words = [
            {"text": word.text, "startTimeMs": _milliseconds(word.start_ns),
             "endTimeMs": _milliseconds(word.end_ns)}
            for word in utterance.words
        ]  # fmt: skip
        final = {
            "alternatives": [
                {"words": words, "text": utterance.raw_text, "startTimeMs": start,
                 "endTimeMs": end, "confidence": 0, "languages": []}
            ],
            "channelTag": tag,
        }  # fmt: skip
        text = utterance.normalized_text if literature_text else utterance.raw_text
        refinement = {
            "finalIndex": str(index),
            "normalizedText": {
                "alternatives": [
                    {"words": words, "text": text, "startTimeMs": start, "endTimeMs": end,
                     "confidence": 0, "languages": []}
                ],
                "channelTag": tag,
            },
        }  # fmt: skip
        common = {"sessionUuid": session, "audioCursors": cursors, "responseWallTimeMs": "0"}
        messages.append({"result": {**common, "final": final, "channelTag": tag}})
        messages.append({"result": {**common, "eouUpdate": {"timeMs": end}, "channelTag": tag}})
        messages.append({"result": {**common, "finalRefinement": refinement, "channelTag": tag}})
    return messages
