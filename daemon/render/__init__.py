"""What the outputs say: pure functions from a finished operation to the text of each file.

`transcripts` (.txt, .json, .error.json, the result's shape), `subtitles` (.srt, .vtt) and
`files` (atomic writing). `documents` is the one place that turns a result into its outputs, for
the daemon, `render` and `transcribe` alike.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from daemon.render import subtitles, transcripts, v3

RENDERERS: Mapping[str, Callable[[Mapping[str, Any]], str]] = {
    "txt": transcripts.render_txt,
    "json": transcripts.render_json,
    "srt": subtitles.render_srt,
    "vtt": subtitles.render_vtt,
}


def writing_order(formats: Iterable[str]) -> list[str]:
    """NAME.json last: whoever waits for it finds every other output already there."""
    return sorted(formats, key=lambda name: name == "json")


def documents(result: Mapping[str, Any], formats: Iterable[str]) -> dict[str, str]:
    """Extension -> text of every output in `formats`, in writing order (NAME.json last).

    `result` is what NAME.json holds: a v2 operation, or a v3 document (`render.v3`), whose
    utterances are rendered through their v2-shaped chunks.
    """
    shaped = v3.as_v2(result) if v3.is_v3(result) else result
    return {
        extension: transcripts.render_json(result) if extension == "json"
        else RENDERERS[extension](shaped)
        for extension in writing_order(formats)
    }  # fmt: skip


def kind(result: Any) -> str:
    """Which API's result a NAME.json holds, as `render` says it."""
    return "API v3" if v3.is_v3(result) else "API v2"


def result_problem(result: Any) -> str | None:
    """Why a saved or fetched result is no transcript (either API's), or None."""
    return v3.problem(result) if v3.is_v3(result) else transcripts.result_problem(result)


def operation_of(result: Mapping[str, Any]) -> Mapping[str, Any]:
    """The finished operation of a result of either API (v2: the result itself)."""
    if v3.is_v3(result):
        operation = result.get(v3.OPERATION)
        return operation if isinstance(operation, dict) else {}
    return result


def result_id(result: Mapping[str, Any]) -> Any:
    """The operation id of a result of either API."""
    return operation_of(result).get("id")


def line_count(result: Mapping[str, Any]) -> int:
    """Lines of the .txt (one per chunk or utterance)."""
    return len(v3.chunks(result) if v3.is_v3(result) else transcripts.chunks(result))
