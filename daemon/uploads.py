"""How far large uploads have got, for `status`: a small JSON file beside the state file.

The log shows every tenth of a large upload. `status` runs in another process and reads the
state file, where progress would cost a transaction at every update; so the running daemon
rewrites `STATE_FILE.uploads.json` (row id -> bytes sent, size, rate, when) at most every
PUBLISH_SECONDS while large uploads run, and `status` shows the fresh entries of rows that are
still uploading. The file is advisory: written without fsync, replaced whole, removed at start.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

PUBLISH_SECONDS = 2.0  # often enough for a person watching `status`, rare enough to cost nothing
STALE_SECONDS = 60.0  # an entry this old is from a daemon that stopped mid-upload: not shown


@dataclass(frozen=True)
class Progress:
    sent_bytes: int
    size_bytes: int
    bytes_per_second: float
    at: float  # wall clock time of the figures

    @property
    def percent(self) -> float:
        return 100.0 * self.sent_bytes / max(1, self.size_bytes)


def board_path(state_file: Path) -> Path:
    return state_file.with_name(state_file.name + ".uploads.json")


def describe(progress: Progress) -> dict[str, Any]:
    """An upload's progress as `status --json` shows it."""
    return {"percent": round(progress.percent, 1), "sent_bytes": progress.sent_bytes,
            "size_bytes": progress.size_bytes,
            "bytes_per_second": round(progress.bytes_per_second),
            "updated_at": progress.at}  # fmt: skip


def fresh(entries: dict[int, Progress], now: float) -> dict[int, Progress]:
    """The entries a running daemon wrote lately (others are left from a stop mid-upload)."""
    return {row_id: entry for row_id, entry in entries.items() if now - entry.at < STALE_SECONDS}


def parse(text: str) -> dict[int, Progress]:
    """The board's entries; none from anything that is not one (a half-written file cannot be
    seen: it is replaced whole, but a hand-edited one can)."""
    try:
        document = json.loads(text)
        return {int(row_id): Progress(**entry) for row_id, entry in document.items()}
    except (ValueError, TypeError, AttributeError):
        return {}


def read(state_file: Path, now: float) -> dict[int, Progress]:
    """Fresh progress of uploads, by row id; none when there is no board."""
    try:
        text = board_path(state_file).read_text(encoding="utf-8")
    except OSError:
        return {}
    return fresh(parse(text), now)


class Board:
    """The daemon's side: progress of the uploads in flight, published every PUBLISH_SECONDS."""

    def __init__(self, state_file: Path, clock: Callable[[], float]) -> None:
        self.path = board_path(state_file)
        self.clock = clock
        self._entries: dict[int, Progress] = {}
        self._published_at = float("-inf")
        self._lock = threading.Lock()
        with contextlib.suppress(OSError):
            self.path.unlink()  # from an earlier run

    def update(self, row_id: int, sent: int, size: int, bytes_per_second: float) -> None:
        now = self.clock()
        with self._lock:
            self._entries[row_id] = Progress(sent, size, bytes_per_second, now)
            if now - self._published_at >= PUBLISH_SECONDS:
                self._publish(now)

    def finish(self, row_id: int) -> None:
        with self._lock:
            if self._entries.pop(row_id, None) is not None:
                self._publish(self.clock())

    def _publish(self, now: float) -> None:
        self._published_at = now
        document = {str(row_id): asdict(entry) for row_id, entry in self._entries.items()}
        temporary = self.path.with_name(self.path.name + ".tmp")
        try:
            if document:
                temporary.write_text(json.dumps(document), encoding="utf-8")
                os.replace(temporary, self.path)
            else:
                self.path.unlink(missing_ok=True)
        except OSError:
            pass  # advisory: `status` shows no progress, nothing else depends on it
