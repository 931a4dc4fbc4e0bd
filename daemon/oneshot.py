"""`speechkit-watch transcribe FILE...`: the daemon's steps for named files, without watching.

Same local check, upload, submission, status checks and outputs as the daemon, on the same state
file, so it works while the daemon runs: the rows it creates carry `owner = transcribe:PID` and
the daemon leaves them alone (and takes them over if this process dies). A file the daemon is
already working on is waited for, not submitted a second time; a file already transcribed is
answered from its saved result.

Progress goes to stderr (stdout is for transcripts), one plain line per stage and file, on a
terminal too: accepted (duration, channels), uploaded (size), submitted (when the result is
expected), done. Ctrl-C stops at once; the rows stay in the state file, so the next run (or the
daemon) carries each file on from where it was.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import json
import logging
import os
import random
import sqlite3
import threading
import time
from pathlib import Path
from typing import TextIO

from daemon import layout, render, state
from daemon.config import Config, WatchFolder
from daemon.logs import duration, shown
from daemon.speechkit import backends
from daemon.steps import Context, Steps
from daemon.storage import INLINE_KEY_PREFIX, ObjectStore

log = logging.getLogger(__name__)

OWNER_PREFIX = "transcribe:"
POLL_SECONDS = 0.2  # how often we look at our rows (local SQLite reads, no API calls)


def owner_name(pid: int | None = None) -> str:
    return f"{OWNER_PREFIX}{os.getpid() if pid is None else pid}"


def owner_alive(owner: str) -> bool:
    """Whether the one-shot process named by an owner string still runs on this machine."""
    if not owner.startswith(OWNER_PREFIX):
        return True  # not ours to judge
    try:
        os.kill(int(owner[len(OWNER_PREFIX) :]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError):
        return True
    return True


def with_folder(config: Config, path: Path) -> Config:
    """A file outside every watched folder is treated as if its own folder were watched."""
    if any(path.is_relative_to(folder.path) for folder in config.watch):
        return config
    extra = WatchFolder(path=path.parent, recognition=config.recognition)
    return dataclasses.replace(config, watch=(*config.watch, extra))


def unreadable_reason(path: Path) -> str | None:
    """Why this process may not read the file ("cannot read: permission denied"), or None."""
    try:
        with path.open("rb") as audio_file:
            audio_file.read(1)
    except OSError as error:
        return f"cannot read: {(error.strerror or str(error)).lower()}"
    return None


class Transcriber:
    """Drives the rows of the named files to an end and reports each as it finishes."""

    def __init__(self, config: Config, *, out: TextIO, err: TextIO) -> None:
        self.config = config
        self.out = out
        self.err = err
        self.stopping = threading.Event()
        self.owner = owner_name()
        self.seen: dict[int, set[str]] = {}  # the stages already reported, per row

    def _say(self, row: state.FileRow, stage: str, what: str, key: str | None = None) -> None:
        """One progress line per stage and file (`key` tells a second submission apart)."""
        told = self.seen.setdefault(row.id, set())
        if (key or stage) in told:
            return
        told.add(key or stage)
        print(f"speechkit-watch: {shown(row.path)}: {stage}{what}", file=self.err)
        self.err.flush()

    def progress(self, row: state.FileRow) -> None:
        """Report the stages this row has passed since the last look."""
        if row.duration_seconds is not None and row.state != state.FAILED:
            channels = row.channels or 1
            self._say(row, "accepted", f": {duration(row.duration_seconds)} of audio, "
                      f"{channels} channel{'s' if channels != 1 else ''}")  # fmt: skip
        uploaded = (
            row.object_key is not None
            and not row.object_key.startswith(INLINE_KEY_PREFIX)  # no storage: sent inline
            and row.duplicate_of is None
        )
        if uploaded and row.state in (state.SUBMITTING, state.PENDING):
            self._say(row, "uploaded", "")
        if row.submitted_at is not None and row.state == state.PENDING:
            ready = row.due_at if row.due_at is not None else row.submitted_at
            self._say(
                row, "submitted",
                f": operation {row.operation_id}, expected ready at "
                f"{time.strftime('%H:%M:%S', time.localtime(ready))} "
                f"(in about {duration(max(0.0, ready - time.time()), precision=1.0)})",
                key=f"submitted {row.submissions}",
            )  # fmt: skip

    def run(self, files: list[Path]) -> int:
        """Exit status: 0 only if every file was transcribed."""
        config, paths, failures = self.config, [], 0
        for name in files:
            path = name.absolute()
            if not path.is_file():
                what = "a folder: name the recordings in it" if path.is_dir() else "no such file"
                print(f"speechkit-watch: {shown(path)}: {what}", file=self.err)
                failures += 1
                continue
            unreadable = unreadable_reason(path)
            if unreadable is not None:  # the daemon would wait for a person; here one is present
                print(f"speechkit-watch: {shown(path)}: {unreadable}", file=self.err)
                failures += 1
                continue
            config = with_folder(config, path)
            paths.append(path)
        store = state.Store(config.state_file)
        try:
            steps = self._steps(config, store)
            rows = {path: self._claim(store, config, path) for path in paths}
            failures += self._drive(store, steps, rows)
        except KeyboardInterrupt:
            # Ctrl-C: stop now. Workers may still be inside a step: leave the store open for them
            # (the process ends in a moment); each row stays where it was for the next run.
            self.stopping.set()
            logging.disable(logging.CRITICAL)  # nothing more from the workers: one line, no noise
            with contextlib.suppress(sqlite3.Error):
                store.release(self.owner)
            raise
        with contextlib.suppress(sqlite3.Error):
            store.release(self.owner)
        store.close()
        return 0 if failures == 0 else 1

    def _steps(self, config: Config, store: state.Store) -> Steps:
        def changed(path: str) -> None:
            log.warning("%s changed while it was being transcribed", shown(path))

        apis = backends.Backends(config.speechkit)
        return Steps(Context(
            config, store, None if config.storage is None else ObjectStore(config.storage),
            apis.configured,
            clock=time.time, rng=random.Random(),  # noqa: S311 - jitter, not cryptography
            stopping=self.stopping, on_changed=changed, other_api=apis.for_api,
        ))  # fmt: skip

    def _claim(self, store: state.Store, config: Config, path: Path) -> int:
        """The row of this file version: the daemon's if it has one, else a new one of ours."""
        found = path.stat()
        version = (found.st_size, found.st_mtime_ns)
        latest = store.latest_for_path(str(path))
        now = time.time()
        if latest is not None and (latest.size, latest.mtime_ns) == version:
            if latest.state == state.FAILED:
                store.requeue(
                    paths=[str(path)], now=now,
                    specification=lambda row: layout.current_specification(
                        config, row.path, row.folder, row.channels or 1
                    ),
                )  # fmt: skip
                store.update(latest.id, now, owner=self.owner)
            elif latest.state in state.ACTIVE_STATES and not state.daemon_running(
                config.state_file
            ):
                # Left unfinished by a daemon that is not running (or by a `transcribe` stopped
                # by Ctrl-C or a refused key): carry it on from where it is, now: the person
                # running this is here, so a backoff from then is not a reason to wait.
                due = now if latest.due_at is None else min(latest.due_at, now)
                store.update(latest.id, now, owner=self.owner, due_at=due)
            # Otherwise the daemon is on it: wait for its result instead of paying twice.
            return latest.id
        folder = layout.folder_for(str(path), config.watch)
        row_id = store.add_version(
            path=str(path), folder=str(folder.path), size=version[0], mtime_ns=version[1], now=now
        )
        store.update(row_id, now, owner=self.owner)
        return row_id

    def _drive(self, store: state.Store, steps: Steps, rows: dict[Path, int]) -> int:
        """Advance our rows until each ends; the number that did not end well."""
        waiting, failures = dict(rows), 0
        workers = concurrent.futures.ThreadPoolExecutor(self.config.concurrency)
        running: dict[int, concurrent.futures.Future[None]] = {}
        try:
            while waiting and not self.stopping.is_set():
                for path, row_id in list(waiting.items()):
                    busy = row_id in running and not running[row_id].done()
                    row = store.get(row_id)
                    self.progress(row)
                    if row.state in state.TERMINAL_STATES and not busy:
                        del waiting[path]
                        failures += not self._report(steps, row)
                    elif row.owner == self.owner and not busy and (row.due_at or 0) <= time.time():
                        running[row_id] = workers.submit(steps.advance, row_id)
                if waiting and self._paused(steps):
                    break
                time.sleep(POLL_SECONDS)
        except BaseException:
            self.stopping.set()
            workers.shutdown(wait=False, cancel_futures=True)  # Ctrl-C must not wait for a step
            raise
        workers.shutdown(wait=True)
        return failures + len(waiting)

    def _paused(self, steps: Steps) -> bool:
        """A refused credential or a URL that is not the API: the daemon waits for a person to
        fix it; here one is present, so say it (the log line above names the key) and stop."""
        held = steps.gate.paused_names()
        if not held:
            return False
        print(
            f"speechkit-watch: stopped: calls to {', '.join(held)} are paused (see the error "
            "above and fix what it names); no file was failed, and each resumes where it is on "
            "the next run",
            file=self.err,
        )
        return True

    def _report(self, steps: Steps, row: state.FileRow) -> bool:
        """Print a finished file's transcript (or why it failed); True if it is done."""
        if row.state != state.DONE:
            print(f"speechkit-watch: {shown(row.path)}: {row.message or row.state}", file=self.err)
            return False
        self._say(row, "done", f": {row.moved_to}" if row.moved_to else "")
        ending = steps.aftercare.ending(row)
        text = Path(ending.txt).read_text(encoding="utf-8") if ending.txt else ""
        if not ending.txt and ending.json:
            operation = json.loads(Path(ending.json).read_text("utf-8"))
            text = render.documents(operation, ["txt"])["txt"]
        print(f"==> {row.moved_to or row.path} <==", file=self.out)
        print(text, end="", file=self.out)
        self.out.flush()
        return True
