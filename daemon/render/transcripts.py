"""What the outputs say: pure functions from a finished operation to the text of each file."""

from __future__ import annotations

import contextlib
import datetime
import json
import math
import re
from collections.abc import Mapping
from typing import Any

_DURATION = re.compile(r"^\s*(-?\d+(?:\.\d*)?)s\s*$")
MAX_DURATION_SECONDS = 315_576_000_000  # the most a protobuf Duration holds (10,000 years)


def parse_duration(value: Any) -> float | None:
    """Seconds from a protobuf JSON duration string such as "0.879999999s"; None for anything
    else, a huge value included (its milliseconds would be no number)."""
    seconds = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value) if math.isfinite(value) else None
    elif isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            seconds = float(match.group(1))
    return seconds if seconds is not None and abs(seconds) <= MAX_DURATION_SECONDS else None


def kind_of(value: Any) -> str:
    """What a JSON value is, for a message naming a malformed part."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return f"a {type(value).__name__}"


def _is_whole_number(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def documented_failure(operation: Mapping[str, Any]) -> dict[str, Any] | None:
    """The operation's `error` when it is the documented failure: an object with an integer code."""
    failure = operation.get("error")
    if isinstance(failure, dict) and _is_whole_number(failure.get("code")):
        return failure
    return None


def _optional_problem(
    container: Mapping[str, Any], key: str, where: str, expected: tuple[type, ...]
) -> str | None:
    """A problem unless `key` is missing or null (both mean none) or of an `expected` type."""
    value = container.get(key)
    if value is None or (isinstance(value, expected) and not isinstance(value, bool)):
        return None
    return f"{where}.{key} is {kind_of(value)}, not {kind_of(expected[0]())}"


def _chunk_problem(chunk: Any, where: str) -> str | None:
    """What is malformed in one chunk: the parts the renderers read, nothing else."""
    if not isinstance(chunk, dict):
        return f"{where} is {kind_of(chunk)}, not an object"
    problem = _optional_problem(chunk, "channelTag", where, (str, int))
    problem = problem or _optional_problem(chunk, "alternatives", where, (list,))
    if problem:
        return problem
    for index, alternative in enumerate(chunk.get("alternatives") or []):
        inner = f"{where}.alternatives[{index}]"
        if not isinstance(alternative, dict):
            return f"{inner} is {kind_of(alternative)}, not an object"
        problem = _optional_problem(alternative, "text", inner, (str,))
        problem = problem or _optional_problem(alternative, "words", inner, (list,))
        if problem:
            return problem
        for number, word in enumerate(alternative.get("words") or []):
            if not isinstance(word, dict):
                return f"{inner}.words[{number}] is {kind_of(word)}, not an object"
            if "word" in word and not isinstance(word["word"], str):
                return f"{inner}.words[{number}].word is {kind_of(word['word'])}, not a string"
            for key in ("startTime", "endTime"):  # what the subtitles are timed by
                if word.get(key) is not None and parse_duration(word[key]) is None:
                    return f"{inner}.words[{number}].{key} is {kind_of(word[key])}, not a duration"
    return None


def result_problem(operation: Any) -> str | None:
    """Why a finished operation is no transcript, or None when it is one.

    A transcript is `done: true` with a `response` object whose `chunks` is a list of chunks
    of the documented shape, or absent (the documented "no speech"). Anything else (no or a null
    `response`, `chunks` that is not a list, an `error` that is not an object with an integer
    `code`) is named here, e.g. "response.chunks is a string, not a list". The daemon checks a
    result with this before writing it and `render` before reading one: what one writes, the
    other reads. A missing or null `text` is a chunk without text, not a problem.
    """
    if not isinstance(operation, dict):
        return f"the operation is {kind_of(operation)}, not an object"
    done = operation.get("done")
    if done is not True:
        if done is None or done is False:
            return "the operation is not done"
        return f"done is {kind_of(done)}, not true"
    failure = documented_failure(operation)
    if failure is not None:
        message = failure.get("message") or "no message"
        return f"the operation ended in an error (code {failure['code']}: {message})"
    error = operation.get("error")
    if error is not None:
        if not isinstance(error, dict):
            return f"error is {kind_of(error)}, not an object"
        if error.get("code") is None:
            return "error.code is missing"
        return f"error.code is {kind_of(error['code'])}, not a whole number"
    if "response" not in operation:
        return "response is missing"
    response = operation["response"]
    if not isinstance(response, dict):
        return f"response is {kind_of(response)}, not an object"
    if "chunks" not in response:
        return None
    found = response["chunks"]
    if not isinstance(found, list):
        return f"response.chunks is {kind_of(found)}, not a list"
    for index, chunk in enumerate(found):
        problem = _chunk_problem(chunk, f"response.chunks[{index}]")
        if problem:
            return problem
    return None


def chunks(operation: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The response's chunks; none when the service found no speech (no `chunks` key)."""
    response = operation.get("response")
    if not isinstance(response, dict):
        return []
    found = response.get("chunks")
    if not isinstance(found, list):
        return []
    return [chunk for chunk in found if isinstance(chunk, dict)]


def chunk_text(chunk: Mapping[str, Any]) -> str:
    """The first alternative's text, on one line."""
    alternatives = chunk.get("alternatives")
    if not isinstance(alternatives, list) or not alternatives:
        return ""
    first = alternatives[0]
    text = first.get("text") if isinstance(first, dict) else None
    return " ".join(text.split()) if isinstance(text, str) else ""  # no text: never "None"


def chunk_start(chunk: Mapping[str, Any]) -> float | None:
    """Start of a chunk: its first word's startTime, when word timings exist."""
    alternatives = chunk.get("alternatives")
    if (
        not isinstance(alternatives, list)
        or not alternatives
        or not isinstance(alternatives[0], dict)
    ):
        return None
    words = alternatives[0].get("words")
    if not isinstance(words, list) or not words or not isinstance(words[0], dict):
        return None
    return parse_duration(words[0].get("startTime"))


def channel_tag(chunk: Mapping[str, Any]) -> str:
    tag = chunk.get("channelTag")
    return "1" if tag is None else str(tag)


def channel_order(chunk: Mapping[str, Any]) -> tuple[int, str]:
    """Channels in their numeric order ("2" before "10"), any other tag after them."""
    tag = channel_tag(chunk)
    if tag.isdigit():
        with contextlib.suppress(ValueError):  # "²" is a digit, yet no number
            return (int(tag), "")
    return (1 << 30, tag)


def label(chunk: Mapping[str, Any]) -> str:
    """Who a line is from: `speaker N` (v3 speaker labeling) or `channel N`."""
    given = chunk.get("label")
    return given if isinstance(given, str) else f"channel {channel_tag(chunk)}"


def labelled(found: list[dict[str, Any]]) -> bool:
    """Lines carry a `[label] ` prefix: several channels occur, or speakers were labelled."""
    return len({channel_tag(chunk) for chunk in found}) > 1 or any(
        "label" in chunk for chunk in found
    )


def render_txt(operation: Mapping[str, Any]) -> str:
    """The .txt: one line per chunk in order; `[channel N] ` prefixes when several channels occur.

    With several channels the lines are put in time order (a dialogue), using each chunk's first
    word time, and chunks starting at the same time by channel number; chunks without timings
    keep their place relative to each other.
    """
    found = chunks(operation)
    several = labelled(found)
    ordered = found
    if several:
        starts = [chunk_start(chunk) for chunk in found]
        if all(start is not None for start in starts):
            ordered = [
                chunk
                for _, _, chunk in sorted(
                    zip(starts, range(len(found)), found, strict=True),
                    key=lambda item: (item[0], channel_order(item[2]), item[1]),
                )
            ]
    lines = []
    for chunk in ordered:
        text = chunk_text(chunk)
        if several:
            text = f"[{label(chunk)}] {text}"
        lines.append(text + "\n")
    return "".join(lines)


def render_json(operation: Mapping[str, Any]) -> str:
    """The .json: the operation exactly as returned, indented, non-ASCII kept."""
    return json.dumps(operation, ensure_ascii=False, indent=2) + "\n"


def iso_time(epoch: float) -> str:
    """RFC 3339 UTC with a Z, as the service writes its own times."""
    moment = datetime.datetime.fromtimestamp(epoch, tz=datetime.UTC)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def render_error(
    *, file: str, stage: str, message: str, at: str, extra: Mapping[str, Any] | None = None
) -> str:
    """The NAME.error.json document."""
    document: dict[str, Any] = {"file": file, "stage": stage, "message": message, "at": at}
    if extra:
        document.update({key: value for key, value in extra.items() if value is not None})
    return json.dumps(document, ensure_ascii=False, indent=2) + "\n"
