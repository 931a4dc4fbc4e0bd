"""The daemon's main loop and lifecycle: start-up, watching, dispatching steps, clean shutdown.

One thread (this loop) owns the settling candidates and decides what runs; a bounded pool of
worker threads runs the steps (`Pipeline.advance`); watchdog's observer threads only enqueue
hints. The loop sleeps until the next thing is due or a hint arrives, so an idle daemon costs
nothing. Signal handlers only set a flag.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from daemon import outputs, quota, state, watching
from daemon.config import Config, WatchFolder
from daemon.logs import shown
from daemon.pipeline import Pipeline
from daemon.recognition import RecognitionClient
from daemon.storage import ObjectStore

log = logging.getLogger(__name__)

DRAIN_SECONDS = 8.0  # on SIGTERM, steps in flight get this long to reach a safe point (< 10 s)
IDLE_WAKE_SECONDS = 5.0  # the loop checks its threads at least this often
SETTLE_POLL_FRACTION = 0.25  # settling files are re-examined four times per settle period
MIN_SETTLE_POLL_SECONDS = 0.05
MAX_SETTLE_POLL_SECONDS = 0.5
SWEEP_SECONDS = 3600.0  # objects whose deletion failed are retried hourly
BACKLOG_LOG_SECONDS = 600.0  # a quota backlog is reported every ten minutes while it lasts


class StartupError(Exception):
    """The daemon cannot start (folder missing, state file unusable): one clear line, exit 2."""


class Service:
    def __init__(
        self,
        config: Config,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.monotonic = monotonic
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self.stopping = threading.Event()
        self.wake = threading.Event()
        self.signals_received = 0
        self.settler = watching.Settler(config.settle_seconds)
        self.watcher = watching.Watcher(config.watch, self.wake)
        self.known: dict[str, tuple[int, int]] = {}
        self.in_flight: dict[int, concurrent.futures.Future[None]] = {}
        self.changed_paths: list[str] = []
        self._changed_lock = threading.Lock()
        self.store: state.Store | None = None
        self.background: list[concurrent.futures.Future[Any]] = []

    # -- lifecycle -----------------------------------------------------------------------------

    def check_folders(self) -> None:
        for index, folder in enumerate(self.config.watch):
            if not folder.path.is_dir():
                raise StartupError(
                    f"{self.config.source}: at 'watch[{index}].path': folder {folder.path} "
                    "does not exist or is not a folder"
                )
            if folder.output_dir is not None:
                try:
                    folder.output_dir.mkdir(parents=True, exist_ok=True)
                except OSError as error:
                    raise StartupError(
                        f"{self.config.source}: at 'watch[{index}].output_dir': cannot create "
                        f"{folder.output_dir}: {error.strerror}"
                    ) from None

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.signals_received += 1
        if self.signals_received > 1:
            # Every state change is already committed; what was in flight resumes at next start.
            os.write(2, b"second signal: exiting at once\n")
            os._exit(1)
        self.stopping.set()
        self.wake.set()

    def run(self) -> int:
        """Run until a signal; 0 after a clean stop."""
        self.check_folders()
        try:
            self.store = state.Store(self.config.state_file)
        except state.StateFileError as error:
            raise StartupError(str(error)) from None
        store = self.store
        objects = ObjectStore(self.config.storage)
        api = RecognitionClient(self.config.speechkit)
        pipeline = Pipeline(
            self.config, store, objects, api, clock=self.clock, rng=self.rng,
            stopping=self.stopping, on_changed=self._file_changed,
        )  # fmt: skip
        removed = outputs.clean_temp_files(
            self._output_folders(), recursive=any(folder.recursive for folder in self.config.watch)
        )
        if removed:
            log.info("removed %d temp file(s) left by an earlier crash", len(removed))
        self.known = store.known_versions()
        self.watcher.start()
        counts = store.counts()
        log.info(
            "started: watching %s; %d file(s) in progress, %d done before",
            ", ".join(shown(folder.path) for folder in self.config.watch),
            sum(counts[name] for name in state.ACTIVE_STATES), counts[state.DONE],
        )  # fmt: skip
        executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=self.config.concurrency, thread_name_prefix="step"
        )
        try:
            self._scan_all()
            self._loop(store, pipeline, executor)
        finally:
            self.watcher.stop()
            clean = self._drain(executor)
            api.close()
            if clean:
                store.close()
        if not clean:
            log.warning(
                "steps still running after %.0f s were abandoned; they resume at next start",
                DRAIN_SECONDS,
            )
            logging.shutdown()
            os._exit(0)  # worker threads cannot be interrupted; the state is consistent
        log.info("stopped")
        return 0

    def _drain(self, executor: concurrent.futures.ThreadPoolExecutor) -> bool:
        executor.shutdown(wait=False, cancel_futures=True)
        futures = [*self.in_flight.values(), *self.background]
        pending = [future for future in futures if not future.done()]
        if pending:
            log.info("waiting for %d step(s) in flight", len(pending))
            concurrent.futures.wait(pending, timeout=DRAIN_SECONDS)
        return all(future.done() for future in futures)

    def _output_folders(self) -> list[Path]:
        folders = []
        for folder in self.config.watch:
            folders.append(folder.path)
            if folder.output_dir is not None:
                folders.append(folder.output_dir)
        return folders

    # -- the loop ------------------------------------------------------------------------------

    def _loop(
        self,
        store: state.Store,
        pipeline: Pipeline,
        executor: concurrent.futures.ThreadPoolExecutor,
    ) -> None:
        next_rescan = self.monotonic() + self.config.rescan_seconds
        next_sweep = self.monotonic()
        next_backlog_report = self.monotonic()
        while not self.stopping.is_set():
            self.wake.clear()
            self._take_hints()
            self._settle(store)
            if self.monotonic() >= next_rescan:
                self._scan_all()
                next_rescan = self.monotonic() + self.config.rescan_seconds
            if self.monotonic() >= next_sweep:
                self._dispatch_sweep(store, pipeline, executor)
                next_sweep = self.monotonic() + SWEEP_SECONDS
            if self.monotonic() >= next_backlog_report:
                self._report_backlog(store, pipeline)
                next_backlog_report = self.monotonic() + BACKLOG_LOG_SECONDS
            self._dispatch(store, pipeline, executor)
            if not self.watcher.alive():
                raise RuntimeError("a folder observer thread died; exiting so systemd restarts us")
            self.wake.wait(self._sleep_seconds(store, next_rescan))

    def _report_backlog(self, store: state.Store, pipeline: Pipeline) -> None:
        backlog = store.backlog()
        window = pipeline.windows["submit"]
        seconds = quota.backlog_seconds(backlog, window.limit, window.used(self.clock()))
        if seconds > 0:
            log.warning(
                "%d file(s) wait for submission, more than the quota of %d an hour allows at "
                "once; submitting them all takes about %s",
                backlog, window.limit, quota.describe_seconds(seconds),
            )  # fmt: skip

    def _sleep_seconds(self, store: state.Store, next_rescan: float) -> float:
        delays = [IDLE_WAKE_SECONDS, next_rescan - self.monotonic()]
        if len(self.settler):
            poll = self.config.settle_seconds * SETTLE_POLL_FRACTION
            delays.append(min(MAX_SETTLE_POLL_SECONDS, max(MIN_SETTLE_POLL_SECONDS, poll)))
        if len(self.in_flight) < self.config.concurrency:
            due = store.next_due_at(exclude=self.in_flight)
            if due is not None:
                delays.append(due - self.clock())
        return max(0.0, min(delays))

    def _file_changed(self, path: str) -> None:
        """Called from workers when a file changed under a step: judge it again from scratch."""
        with self._changed_lock:
            self.changed_paths.append(path)
        self.wake.set()

    def _take_hints(self) -> None:
        with self._changed_lock:
            changed, self.changed_paths = self.changed_paths, []
        for path in changed:
            self.known.pop(path, None)
            try:
                folder = watching.folder_for(path, self.config.watch)
            except ValueError:
                continue
            self._note(path, watching.SEEN, folder)
        for hint in self.watcher.drain():
            self._note(hint.path, hint.kind, hint.folder)

    def _note(self, path: str, kind: str, folder: WatchFolder) -> None:
        found = watching.stat_regular(path, str(folder.path))
        if found is None:
            self.settler.forget(path)
            return
        if path not in self.settler.candidates and self.known.get(path) == (
            found.st_size,
            found.st_mtime_ns,
        ):
            return  # this version is already known: no need to wait for it to settle
        self.settler.note(
            path, kind, folder, size=found.st_size, mtime_ns=found.st_mtime_ns, now=self.monotonic()
        )

    def _scan_all(self) -> None:
        for folder in self.config.watch:
            for path in watching.scan(folder):
                self._note(path, watching.SEEN, folder)

    def _settle(self, store: state.Store) -> None:
        now = self.monotonic()
        for path, observation in list(self.settler.candidates.items()):
            found = watching.stat_regular(path, str(observation.folder.path))
            if found is None:
                self.settler.forget(path)
                continue
            if not self.settler.observe(path, found.st_size, found.st_mtime_ns, now):
                continue
            self.settler.forget(path)
            version = (found.st_size, found.st_mtime_ns)
            if self.known.get(path) == version:
                continue
            store.add_version(
                path=path, folder=str(observation.folder.path), size=found.st_size,
                mtime_ns=found.st_mtime_ns, now=self.clock(),
            )  # fmt: skip
            self.known[path] = version
            log.info("settled %s (%d bytes)", shown(path), found.st_size)

    def _dispatch(
        self,
        store: state.Store,
        pipeline: Pipeline,
        executor: concurrent.futures.ThreadPoolExecutor,
    ) -> None:
        for row_id, future in list(self.in_flight.items()):
            if future.done():
                del self.in_flight[row_id]
                error = future.exception()
                if error is not None:
                    log.error("a step of file #%d failed unexpectedly: %r", row_id, error)
        free = self.config.concurrency - len(self.in_flight)
        if free <= 0:
            return
        for row in store.due(self.clock(), limit=free, exclude=self.in_flight):
            future = executor.submit(self._advance_safely, pipeline, row.id)
            self.in_flight[row.id] = future
            future.add_done_callback(lambda _: self.wake.set())

    def _advance_safely(self, pipeline: Pipeline, row_id: int) -> None:
        try:
            pipeline.advance(row_id)
        except Exception:
            log.exception("unexpected error while processing file #%d; retrying later", row_id)
            assert self.store is not None  # noqa: S101
            now = self.clock()
            self.store.update(row_id, now, due_at=now + 60.0)

    def _dispatch_sweep(
        self,
        store: state.Store,
        pipeline: Pipeline,
        executor: concurrent.futures.ThreadPoolExecutor,
    ) -> None:
        """Delete objects whose deletion failed or was cut short by a crash (in a worker)."""
        if not self.config.storage.delete_after:
            return

        self.background.append(executor.submit(pipeline.sweep_objects))
