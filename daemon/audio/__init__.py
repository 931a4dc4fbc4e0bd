"""Preparing a recording for upload: the one step between a settled file and its object.

`prepare(path)` checks the file locally and says what will be uploaded: the file itself for Ogg
Opus (`oggopus` checks it without reading its audio), with its duration and channel count.
`AudioRefused` says why a file cannot be transcribed, naming the reason and a stable code.
Conversion from other formats plugs in here: it returns a `PreparedAudio` whose `upload_path`
is the converted file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from daemon.audio.oggopus import AudioRefused, inspect_file

__all__ = ["AudioRefused", "PreparedAudio", "prepare"]


@dataclass(frozen=True)
class PreparedAudio:
    """What goes up for one recording, and what the schedule needs to know about it."""

    upload_path: Path  # the file to upload (the recording itself when it is Ogg Opus)
    duration_seconds: float
    channels: int


def prepare(path: Path) -> PreparedAudio:
    """Check `path`; AudioRefused if it cannot be transcribed. OSError propagates unchanged."""
    info = inspect_file(path)
    return PreparedAudio(path, info.duration_seconds, info.channels)
