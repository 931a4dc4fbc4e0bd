"""What the outputs say: pure functions from a finished operation to the text of each file."""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Mapping
from typing import Any

_DURATION = re.compile(r"^\s*(-?\d+(?:\.\d*)?)s\s*$")


def parse_duration(value: Any) -> float | None:
    """Seconds from a protobuf JSON duration string such as "0.879999999s"."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return float(match.group(1))
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
    text = first.get("text", "") if isinstance(first, dict) else ""
    return " ".join(str(text).split())


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
    return str(chunk.get("channelTag", "1"))


def render_txt(operation: Mapping[str, Any]) -> str:
    """The .txt: one line per chunk in order; `[channel N] ` prefixes when several channels occur.

    With several channels the lines are put in time order (a dialogue), using each chunk's first
    word time; chunks without timings keep their place relative to each other.
    """
    found = chunks(operation)
    tags = {channel_tag(chunk) for chunk in found}
    several = len(tags) > 1
    ordered = found
    if several:
        starts = [chunk_start(chunk) for chunk in found]
        if all(start is not None for start in starts):
            ordered = [
                chunk
                for _, _, chunk in sorted(
                    zip(starts, range(len(found)), found, strict=True),
                    key=lambda item: (item[0], item[1]),
                )
            ]
    lines = []
    for chunk in ordered:
        text = chunk_text(chunk)
        if several:
            text = f"[channel {channel_tag(chunk)}] {text}"
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
