"""Writing output files: atomically (temp file in the same folder, fsync, rename).

A reader never sees a partial file. Temp names are hidden and end in `.skw-tmp`, so they never
match a watch pattern; leftovers from a crash are removed at start. Where a file's outputs go
and what they are called is `daemon.layout`'s; what they say is `daemon.render`'s.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterable, Mapping
from pathlib import Path

from daemon.crashpoints import crash_point
from daemon.layout import OWN_TEMP_SUFFIX, fit_name


def _fsync_dir(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_atomic(target: Path, text: str, *, fsync_dir: bool = True) -> None:
    """Write `text` to `target` so that readers see the old file or the whole new one."""
    # Short and hidden whatever the target's name: it must fit in 255 bytes and match no pattern.
    temporary = target.parent / f".{secrets.token_hex(8)}{OWN_TEMP_SUFFIX}"
    data = text.encode("utf-8")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        with os.fdopen(descriptor, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
    if fsync_dir:
        _fsync_dir(target.parent)


def write_all(files: Mapping[Path, str]) -> None:
    """Write several outputs atomically each, then fsync their folders once."""
    folders = set()
    for target, text in files.items():
        target.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(target, text, fsync_dir=False)
        crash_point("output_written")
        folders.add(target.parent)
    for folder in folders:
        _fsync_dir(folder)


def unused_name(folder: Path, name: str) -> Path:
    """`folder/name`, or `folder/stem (2).ext` and so on when that is taken."""
    candidate = folder / name
    stem_part, dot, extension = name.rpartition(".")
    if not dot:
        stem_part, extension = name, ""
    number = 2
    while candidate.exists():
        suffix = f" ({number})" + (f".{extension}" if extension else "")
        candidate = folder / fit_name(stem_part, suffix)
        number += 1
    return candidate


def remove(path: Path) -> bool:
    """Remove a file if it exists; True if it was there."""
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    _fsync_dir(path.parent)
    return True


def clean_temp_files(folders: Iterable[Path], *, recursive: bool) -> list[Path]:
    """Remove our temp files left by a crash; the list of what was removed."""
    removed: list[Path] = []
    for folder in folders:
        if not folder.is_dir():
            continue
        candidates = (
            folder.rglob(f".*{OWN_TEMP_SUFFIX}")
            if recursive
            else folder.glob(f".*{OWN_TEMP_SUFFIX}")
        )
        for candidate in candidates:
            with contextlib.suppress(OSError):
                candidate.unlink()
                removed.append(candidate)
    return removed
