"""Where a file's outputs go and what they are called: pure functions of paths and the config.

`NAME.txt`, `NAME.json`, `NAME.srt`, `NAME.vtt` and `NAME.error.json` lie beside the audio, or
under the folder's `output_dir` keeping subfolders, or beside the audio where `after_done: move`
put it. Names never pass the file system's 255-byte limit. Our temp files are hidden and end in
OWN_TEMP_SUFFIX, so that no watch pattern ever matches them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from daemon import config as config_module

OWN_TEMP_SUFFIX = ".skw-tmp"  # our own atomic-write temp files (hidden too)
ERROR_SUFFIX = ".error.json"
NAME_MAX_BYTES = 255  # the file name limit of Linux file systems


def stem(audio_path: Path) -> str:
    """NAME: the audio file name without its extension (`call.ogg` -> `call`)."""
    return audio_path.stem if audio_path.suffix else audio_path.name


def fit_name(name_stem: str, suffix: str) -> str:
    """`stem + suffix`, with the stem shortened if the name would pass the 255-byte limit."""
    room = NAME_MAX_BYTES - len(os.fsencode(suffix))
    encoded = os.fsencode(name_stem)
    if len(encoded) > room:
        name_stem = encoded[:room].decode("utf-8", errors="ignore")
    return name_stem + suffix


def output_path(audio_path: Path, out_dir: Path, extension: str, name: str | None = None) -> Path:
    """`out_dir/NAME.extension`: NAME is the audio's stem unless the row was given another."""
    return out_dir / fit_name(name or stem(audio_path), f".{extension}")


def error_path(audio_path: Path, out_dir: Path, name: str | None = None) -> Path:
    return out_dir / fit_name(name or stem(audio_path), ERROR_SUFFIX)


def inside(path: str, folder: str) -> bool:
    """True if `path` is `folder` or below it (both already resolved)."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def folder_for(
    path: str, folders: Sequence[config_module.WatchFolder]
) -> config_module.WatchFolder:
    """The watched folder a path belongs to (the deepest one containing it)."""
    best: config_module.WatchFolder | None = None
    for folder in folders:
        if inside(path, str(folder.path)) and (
            best is None or len(str(folder.path)) > len(str(best.path))
        ):
            best = folder
    if best is None:
        raise ValueError(f"{path} is not inside a watched folder")
    return best


def relative_output_dir(audio_path: Path, folder: config_module.WatchFolder) -> Path:
    """Where the outputs of `audio_path` go: beside it, or under `output_dir` keeping subfolders."""
    if folder.output_dir is None:
        return audio_path.parent
    try:
        relative = audio_path.parent.relative_to(folder.path)
    except ValueError:
        relative = Path()
    return folder.output_dir / relative


def output_dir(audio_path: Path, folder: config_module.WatchFolder, moved_to: Path | None) -> Path:
    """Where the outputs of a file are now: they follow the audio when after_done moved it and
    the folder has no output_dir."""
    if moved_to is not None and folder.output_dir is None:
        return moved_to.parent
    return relative_output_dir(audio_path, folder)


class _Row(Protocol):
    @property
    def path(self) -> str: ...
    @property
    def folder(self) -> str: ...
    @property
    def moved_to(self) -> str | None: ...
    @property
    def output_name(self) -> str | None: ...


def folder_of(config: config_module.Config, path: str, folder: str) -> config_module.WatchFolder:
    """The watched folder whose settings a file follows; one that left the config (a reload)
    lets its files finish with the global settings, their outputs beside them."""
    try:
        return folder_for(path, config.watch)
    except ValueError:
        return config_module.WatchFolder(path=Path(folder), recognition=config.recognition)


def current_specification(
    config: config_module.Config, path: str, folder: str, channels: int = 1
) -> str:
    """The recognition settings the config gives this file now, as the canonical JSON the
    state file records (`retry` sends a failed file with these, not the ones it failed with)."""
    recognition = folder_of(config, path, folder).recognition
    settings = recognition.settings(config.speechkit.api, channels)
    return json.dumps(settings, sort_keys=True)


def outputs_name(audio_path: Path, *, whole_name: bool) -> str:
    """NAME of a file's outputs: its stem (`call.wav` -> `call`), or its whole name
    (`call.mp3` -> `call.mp3`) when an earlier file of the same stem in its folder has the
    stem's outputs, so that two recordings never overwrite each other's transcripts."""
    return audio_path.name if whole_name else stem(audio_path)


def row_output(config: config_module.Config, row: _Row, extension: str) -> Path:
    """`NAME.extension` of a recorded file version, where its outputs are now."""
    audio = Path(row.moved_to or row.path)
    name = outputs_name(audio, whole_name=row.output_name is not None)
    return output_path(audio, row_output_dir(config, row), extension, name)


def row_error(config: config_module.Config, row: _Row) -> Path:
    """`NAME.error.json` of a recorded file version."""
    audio = Path(row.moved_to or row.path)
    name = outputs_name(audio, whole_name=row.output_name is not None)
    return error_path(audio, row_output_dir(config, row), name)


def row_output_dir(config: config_module.Config, row: _Row) -> Path:
    """Where the outputs of a recorded file version are now."""
    moved_to = None if row.moved_to is None else Path(row.moved_to)
    return output_dir(Path(row.path), folder_of(config, row.path, row.folder), moved_to)
