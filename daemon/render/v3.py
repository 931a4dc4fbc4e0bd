"""SpeechKit API v3 results: what `getRecognition` streamed, turned into what the outputs say.

A v3 result document (what NAME.json holds) is the finished operation and the `getRecognition`
messages in the order they came, unchanged, plus whether speakers were labelled:

    {"operation": {...}, "speakerLabeling": false, "getRecognition": [{"result": {...}}, ...]}

Each utterance of the stream is a `final` (raw words with times in ms) of one channel and
`finalIndex`; a `finalRefinement` with the same channel and index may give its normalized text.
The transcript uses the refinement where there is one, else the final, never both, in time
order. `channelTag` is 0-based in v3: people see 1-based numbers. With speaker labeling the
service reports the speaker through `channelTag`, and lines say `[speaker N]`.

The utterances are turned into v2-shaped chunks (`alternatives[0].text` and `words[]` with
duration strings, a 1-based `channelTag`, a `label`), so that .txt, .srt and .vtt are rendered by
the same code for both APIs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from daemon.render import transcripts

OPERATION, MESSAGES, SPEAKERS = "operation", "getRecognition", "speakerLabeling"


@dataclass
class Word:
    text: str
    start_ms: int
    end_ms: int


@dataclass
class Utterance:
    """One `final` of a channel, with its refined text once a `finalRefinement` names it."""

    channel: int  # 0-based, as v3 reports it
    index: int  # finalIndex
    start_ms: int | None = None
    text: str = ""
    words: list[Word] = field(default_factory=list)
    normalized: str | None = None
    arrival: int = 0  # place in the stream: orders utterances without times

    def shown_text(self) -> str:
        """The refined text where there is one, else the final's: never both."""
        text = self.normalized if self.normalized is not None else self.text
        return " ".join(text.split())


def is_v3(document: Any) -> bool:
    """Whether a result document is a v3 one (a v2 result is the operation itself)."""
    return isinstance(document, dict) and isinstance(document.get(MESSAGES), list)


def document(
    operation: Mapping[str, Any], messages: Sequence[Mapping[str, Any]], *, speakers: bool
) -> dict[str, Any]:
    """What NAME.json holds for a v3 result."""
    return {OPERATION: dict(operation), SPEAKERS: speakers, MESSAGES: list(messages)}


INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1  # what a protobuf int64 holds: nothing else is one


def _integer(value: Any) -> int | None:
    """An int64 as v3 writes it (a string of digits), or a plain number."""
    if isinstance(value, bool):
        return None
    found: int | None = None
    if isinstance(value, int):
        found = value
    elif isinstance(value, float) and value.is_integer():
        found = int(value)
    elif isinstance(value, str):
        try:
            found = int(value.strip())
        except ValueError:
            return None
    return found if found is not None and INT64_MIN <= found <= INT64_MAX else None


def _channel(result: Mapping[str, Any], event: Mapping[str, Any]) -> int:
    tag = _integer(event.get("channelTag"))
    if tag is None:
        tag = _integer(result.get("channelTag"))
    return tag if tag is not None and tag >= 0 else 0


def _first_alternative(event: Any) -> Mapping[str, Any]:
    alternatives = event.get("alternatives") if isinstance(event, dict) else None
    if isinstance(alternatives, list) and alternatives and isinstance(alternatives[0], dict):
        return alternatives[0]
    return {}


def _words(alternative: Mapping[str, Any]) -> list[Word]:
    found: list[Word] = []
    words = alternative.get("words")
    for word in words if isinstance(words, list) else []:  # `problem` names other words
        if not isinstance(word, dict):
            continue
        text = " ".join(str(word.get("text") or "").split())
        start, end = _integer(word.get("startTimeMs")), _integer(word.get("endTimeMs"))
        if text and start is not None:
            found.append(Word(text, start, max(start, end if end is not None else start)))
    return found


def utterances(messages: Sequence[Any]) -> list[Utterance]:
    """Every utterance of a stream with text, in time order (ties: by channel, then by index).

    Refinements may come before or after their final; a refinement without a final (none came)
    still gives its text, timed by its own alternative.
    """
    found: dict[tuple[int, int], Utterance] = {}
    next_index: dict[int, int] = {}  # a final without a finalIndex: the next one of its channel
    for arrival, message in enumerate(messages):
        result = message.get("result") if isinstance(message, dict) else None
        if not isinstance(result, dict):
            continue
        final, refinement = result.get("final"), result.get("finalRefinement")
        if isinstance(final, dict):
            channel = _channel(result, final)
            cursors = result.get("audioCursors")
            index = _integer(cursors.get("finalIndex")) if isinstance(cursors, dict) else None
            if index is None:
                index = next_index.get(channel, 0)
            next_index[channel] = index + 1
            alternative = _first_alternative(final)
            utterance = found.setdefault((channel, index), Utterance(channel, index))
            utterance.arrival = arrival
            utterance.text = str(alternative.get("text") or "")
            utterance.words = _words(alternative)
            start = _integer(alternative.get("startTimeMs"))
            utterance.start_ms = utterance.words[0].start_ms if utterance.words else start
        elif isinstance(refinement, dict):
            normalized = refinement.get("normalizedText")
            index = _integer(refinement.get("finalIndex"))
            if not isinstance(normalized, dict) or index is None:
                continue
            channel = _channel(result, normalized)
            alternative = _first_alternative(normalized)
            known = found.get((channel, index))
            if known is None:
                known = found[(channel, index)] = Utterance(channel, index, arrival=arrival)
                known.start_ms = _integer(alternative.get("startTimeMs"))
            known.normalized = str(alternative.get("text") or "")
    spoken = [utterance for utterance in found.values() if utterance.shown_text()]
    return sorted(
        spoken,
        key=lambda item: (
            item.start_ms if item.start_ms is not None else -1,
            item.channel,
            item.index,
            item.arrival,
        ),
    )


def _seconds(milliseconds: int) -> str:
    return f"{milliseconds / 1000:.3f}s"


def chunks(source: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The v3 document's utterances as v2-shaped chunks, in time order: the text people read,
    the final's word timings, a 1-based `channelTag`, and a `label` with speaker labeling."""
    speakers = source.get(SPEAKERS) is True
    shaped = []
    for utterance in utterances(source.get(MESSAGES) or []):
        words = [
            {"word": word.text, "startTime": _seconds(word.start_ms),
             "endTime": _seconds(word.end_ms)}
            for word in utterance.words
        ]  # fmt: skip
        chunk: dict[str, Any] = {
            "alternatives": [{"text": utterance.shown_text(), "words": words}],
            "channelTag": str(utterance.channel + 1),
        }
        if speakers:
            chunk["label"] = f"speaker {utterance.channel + 1}"
        shaped.append(chunk)
    return shaped


def as_v2(source: Mapping[str, Any]) -> dict[str, Any]:
    """A v2-shaped finished operation of the same transcript, for the shared renderers."""
    operation = source.get(OPERATION)
    identifier = operation.get("id") if isinstance(operation, dict) else None
    return {"done": True, "id": identifier, "response": {"chunks": chunks(source)}}


def _kind(value: Any) -> str:
    """What a JSON value is, for a message naming a malformed part."""
    if isinstance(value, str):
        return repr(value) if len(value) <= 20 else "a string"
    return transcripts.kind_of(value)


def _number_problem(container: Mapping[str, Any], key: str, where: str) -> str | None:
    """A problem unless `key` is missing, null or an int64 >= 0 (ms, channel or index)."""
    value = container.get(key)
    if value is None:
        return None
    found = _integer(value)
    if found is not None and found >= 0:
        return None
    return f"{where}.{key} is {_kind(value)}, not a whole number >= 0"


def _object_problem(container: Mapping[str, Any], key: str, where: str) -> str | None:
    value = container.get(key)
    if value is None or isinstance(value, dict):
        return None
    return f"{where}.{key} is {_kind(value)}, not an object"


def _alternative_problem(alternative: Any, where: str) -> str | None:
    """What is malformed in one alternative: each part the renderer reads."""
    if not isinstance(alternative, dict):
        return f"{where} is {_kind(alternative)}, not an object"
    text, words = alternative.get("text"), alternative.get("words")
    if text is not None and not isinstance(text, str):
        return f"{where}.text is {_kind(text)}, not a string"
    problem = _number_problem(alternative, "startTimeMs", where)
    if problem is not None:
        return problem
    if words is None:
        return None
    if not isinstance(words, list):
        return f"{where}.words is {_kind(words)}, not a list"
    for number, word in enumerate(words):
        inner = f"{where}.words[{number}]"
        if not isinstance(word, dict):
            return f"{inner} is {_kind(word)}, not an object"
        said = word.get("text")
        if said is not None and not isinstance(said, str):
            return f"{inner}.text is {_kind(said)}, not a string"
        problem = _number_problem(word, "startTimeMs", inner)
        problem = problem or _number_problem(word, "endTimeMs", inner)
        if problem is not None:
            return problem
    return None


def _event_problem(event: Any, where: str) -> str | None:
    """What is malformed in a `final` or a `normalizedText`: its channel and alternatives."""
    if not isinstance(event, dict):
        return f"{where} is {_kind(event)}, not an object"
    problem = _number_problem(event, "channelTag", where)
    if problem is not None:
        return problem
    alternatives = event.get("alternatives")
    if alternatives is None:
        return None
    if not isinstance(alternatives, list):
        return f"{where}.alternatives is {_kind(alternatives)}, not a list"
    for number, alternative in enumerate(alternatives):
        problem = _alternative_problem(alternative, f"{where}.alternatives[{number}]")
        if problem is not None:
            return problem
    return None


def _message_problem(message: Any, where: str) -> str | None:
    """What is malformed in one getRecognition message: every part `utterances` reads, so that
    a document without a problem renders (a malformed one is a malformed answer, not a crash)."""
    if not isinstance(message, dict):
        return f"{where} is not an object"
    if "error" in message:
        error = message["error"]
        said = error.get("message") if isinstance(error, dict) else error
        return f"{where} is an error: {said}"
    result = message.get("result")
    if not isinstance(result, dict):
        return f"{where}.result is missing or not an object"
    where = f"{where}.result"
    problem = _number_problem(result, "channelTag", where)
    problem = problem or _object_problem(result, "audioCursors", where)
    if problem is not None:
        return problem
    cursors = result.get("audioCursors")
    if isinstance(cursors, dict):
        problem = _number_problem(cursors, "finalIndex", f"{where}.audioCursors")
        if problem is not None:
            return problem
    final, refinement = result.get("final"), result.get("finalRefinement")
    if final is not None:
        problem = _event_problem(final, f"{where}.final")
        if problem is not None:
            return problem
    if refinement is None:
        return None
    where = f"{where}.finalRefinement"
    if not isinstance(refinement, dict):
        return f"{where} is {_kind(refinement)}, not an object"
    problem = _number_problem(refinement, "finalIndex", where)
    normalized = refinement.get("normalizedText")
    if problem is None and normalized is not None:
        problem = _event_problem(normalized, f"{where}.normalizedText")
    return problem


def problem(source: Any) -> str | None:
    """Why a v3 result document is no transcript, or None when it is one (an empty stream is
    one: no speech)."""
    if not isinstance(source, dict):
        return "the result is not an object"
    operation = source.get(OPERATION)
    if not isinstance(operation, dict) or not isinstance(operation.get("id"), str):
        return "operation is missing or has no id"
    if operation.get("done") is not True:
        return "the operation is not done"
    if operation.get("error") is not None:
        return "the operation ended in an error"
    messages = source.get(MESSAGES)
    if not isinstance(messages, list):
        return f"{MESSAGES} is not a list"
    for number, message in enumerate(messages):
        found = _message_problem(message, f"{MESSAGES}[{number}]")
        if found is not None:
            return found
    return None
