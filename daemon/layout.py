"""Where a file's outputs go and what they are called: pure functions of paths and the config.

`NAME.txt`, `NAME.json`, `NAME.srt`, `NAME.vtt` and `NAME.error.json` lie beside the audio, or
under the folder's `output_dir` keeping subfolders, or beside the audio where `after_done: move`
put it. Names never pass the file system's 255-byte limit. Our temp files are hidden and end in
OWN_TEMP_SUFFIX, so that no watch pattern ever matches them.
"""

from __future__ import annotations

import os
from pathlib import Path

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


def output_path(audio_path: Path, out_dir: Path, extension: str) -> Path:
    return out_dir / fit_name(stem(audio_path), f".{extension}")


def error_path(audio_path: Path, out_dir: Path) -> Path:
    return out_dir / fit_name(stem(audio_path), ERROR_SUFFIX)


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
