"""Preparing a recording for upload: the one step between a settled file and its object.

`prepare(path, work_dir, name)` checks the file locally and says what will be uploaded. Ogg Opus
within the limits goes as it is (`oggopus` checks it without reading its audio). Anything else
with an audio stream (WAV, MP3, M4A, FLAC, WebM, video, ...; found by content, not by name), and
Ogg Opus with more than two channels, is converted (`convert`) to `work_dir/NAME.ogg`, and the
limits are checked on that converted file, which is what goes up. `AudioRefused` says why a file
cannot be transcribed, naming the reason and a stable code.

The converted file is a cache of the upload: written under a temp name and renamed when whole,
removed once uploaded, and the whole folder is emptied at start (`clean_work_dir`), so a crash
mid-conversion leaves nothing that is used; the upload step converts again when it is missing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from daemon.audio.oggopus import AudioRefused, inspect_file

__all__ = [
    "AudioRefused",
    "PreparedAudio",
    "clean_work_dir",
    "converted_path",
    "discard",
    "prepare",
    "work_dir_for",
]

log = logging.getLogger(__name__)

# Refusals of the Ogg Opus check that conversion can cure: other formats, other Ogg codecs, and
# Ogg Opus with more channels than recognition takes (mixed down). A truncated or corrupt Ogg
# Opus file stays refused: the recording is broken, and converting would hide it.
CONVERTIBLE = frozenset({"not_ogg", "not_opus", "too_many_channels"})
PARTIAL_SUFFIX = ".partial"


@dataclass(frozen=True)
class PreparedAudio:
    """What goes up for one recording, and what the schedule needs to know about it."""

    upload_path: Path  # the file to upload (the recording itself when it is Ogg Opus)
    duration_seconds: float
    channels: int
    converted: bool = False


def work_dir_for(state_file: Path) -> Path:
    """The daemon's own conversion folder, beside its state file (never a watched folder)."""
    return state_file.with_name(state_file.name + ".audio")


def converted_path(work_dir: Path, name: str) -> Path:
    return work_dir / f"{name}.ogg"


def prepare(path: Path, work_dir: Path | None = None, name: str = "") -> PreparedAudio:
    """Check `path`, converting it into `work_dir` when it is not acceptable Ogg Opus as it is.

    AudioRefused if it cannot be transcribed. OSError propagates unchanged. Without `work_dir`
    only Ogg Opus is accepted.
    """
    try:
        info = inspect_file(path)
    except AudioRefused as refusal:
        if work_dir is None or refusal.code not in CONVERTIBLE:
            raise
    else:
        return PreparedAudio(path, info.duration_seconds, info.channels)
    target = converted_path(work_dir, name or path.name)
    if target.exists():
        info = inspect_file(target)  # converted earlier in this run, whole (renamed when done)
        return PreparedAudio(target, info.duration_seconds, info.channels, converted=True)
    # PyAV and its FFmpeg libraries (about 20 MB of memory) load only when a file needs them.
    from daemon.audio import convert  # noqa: PLC0415

    work_dir.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + PARTIAL_SUFFIX)
    try:
        conversion = convert.convert(path, partial)
        # Limits apply to what is uploaded: the converted object.
        info = inspect_file(partial)
        os.replace(partial, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
    if conversion.source_channels > conversion.channels:
        log.warning(
            "%s has %d channels; recognition takes at most 2, so they are mixed down to mono",
            path.name, conversion.source_channels,
        )  # fmt: skip
    log.info(
        "converted %s (%s, %s, %d channel(s)) to Ogg Opus: %d channel(s) at %d Hz, %d bytes",
        path.name, conversion.source_format, conversion.source_codec, conversion.source_channels,
        conversion.channels, conversion.sample_rate, target.stat().st_size,
    )  # fmt: skip
    return PreparedAudio(target, info.duration_seconds, info.channels, converted=True)


def discard(work_dir: Path, name: str) -> None:
    """Remove a converted file once it is no longer needed (uploaded, or its row moved on)."""
    with contextlib.suppress(FileNotFoundError):
        converted_path(work_dir, name).unlink()


def clean_work_dir(work_dir: Path) -> int:
    """Empty the conversion folder at start: whatever is there is from an earlier run."""
    if not work_dir.is_dir():
        return 0
    removed = 0
    for entry in work_dir.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
        removed += 1
    return removed
