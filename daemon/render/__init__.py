"""What the outputs say: pure functions from a finished operation to the text of each file.

`transcripts` (.txt, .json, .error.json, the result's shape), `subtitles` (.srt, .vtt) and
`files` (atomic writing). `documents` is the one place that turns a result into its outputs, for
the daemon, `render` and `transcribe` alike.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from daemon.render import subtitles, transcripts

RENDERERS: Mapping[str, Callable[[Mapping[str, Any]], str]] = {
    "txt": transcripts.render_txt,
    "json": transcripts.render_json,
    "srt": subtitles.render_srt,
    "vtt": subtitles.render_vtt,
}


def writing_order(formats: Iterable[str]) -> list[str]:
    """NAME.json last: whoever waits for it finds every other output already there."""
    return sorted(formats, key=lambda name: name == "json")


def documents(operation: Mapping[str, Any], formats: Iterable[str]) -> dict[str, str]:
    """Extension -> text of every output in `formats`, in writing order (NAME.json last)."""
    return {extension: RENDERERS[extension](operation) for extension in writing_order(formats)}
