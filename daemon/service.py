"""The daemon's main loop and lifecycle: start-up, watching, dispatching steps, clean shutdown.

One thread (this loop) owns the settling candidates and decides what runs; a bounded pool of
worker threads runs the steps (`Pipeline.advance`); watchdog's observer threads only enqueue
hints. The loop sleeps until the next thing is due or a hint arrives, so an idle daemon costs
nothing. Signal handlers only set a flag.

Under systemd (`Type=notify`) the loop reports READY once the observers run, a STATUS line with
the queue, WATCHDOG pings while every thread is healthy (a hung step stops them, so systemd
restarts us), and STOPPING. SIGHUP re-reads the config; a broken one is logged and ignored.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
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

from daemon import config as config_module
from daemon import logs, notify, oneshot, outputs, quota, state, watching
from daemon.config import Config, WatchFolder
from daemon.logs import shown
from daemon.pipeline import CHECK_CALL, SUBMIT_CALL, Pipeline
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
STATUS_SECONDS = 2.0  # systemd's status line follows the queue without a query per loop pass
HEALTH_CHECK_SECONDS = 30.0  # without a systemd watchdog, hung steps are still looked for (logged)
# Test hook like the crash points: SPEECHKIT_WATCH_HANG_AT=step makes every step block forever.
HANG_VARIABLE = "SPEECHKIT_WATCH_HANG_AT"
# Sections a reload cannot change: in-flight steps hold the adapters built from them (and
# credentials from LoadCredential= are only refreshed by a restart anyway).
RESTART_ONLY = ("storage", "speechkit", "state_file")


class ObserverDiedError(Exception):
    """A watchdog observer thread is gone: exit non-zero so the service manager restarts us."""


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
        self.wake = watching.Waker()  # set from signal handlers too: must be reentrant
        self.signals_received = 0
        self.settler = watching.Settler(config.settle_seconds)
        self.watcher = watching.Watcher(config.watch, self.wake)
        self.known: dict[str, tuple[int, int]] = {}
        self.in_flight: dict[int, concurrent.futures.Future[None]] = {}
        self.changed_paths: list[str] = []
        self._changed_lock = threading.Lock()
        self.store: state.Store | None = None
        self.scanned_once = False
        self.background: list[concurrent.futures.Future[Any]] = []
        self.executor: concurrent.futures.ThreadPoolExecutor | None = None
        # systemd: set from the environment in run(); inert until then.
        self.notifier = notify.Notifier(None)
        self.watchdog_seconds: float | None = None
        self.next_ping = 0.0
        self.next_status = 0.0
        self.last_status = ""
        self.step_limit_base = notify.STEP_LIMIT_SECONDS
        self.step_started: dict[int, float] = {}  # row id -> monotonic start, while a step runs
        self._steps_lock = threading.Lock()
        self.hung_reported: set[int] = set()
        self.reload_requested = False
        self.reload_failed = False

    # -- lifecycle -----------------------------------------------------------------------------

    def check_folders(self, settings: Config | None = None) -> None:
        settings = settings or self.config
        for index, folder in enumerate(settings.watch):
            if not folder.path.is_dir():
                raise StartupError(
                    f"{settings.source}: at 'watch[{index}].path': folder {folder.path} "
                    "does not exist or is not a folder"
                )
            if folder.output_dir is not None:
                try:
                    folder.output_dir.mkdir(parents=True, exist_ok=True)
                except OSError as error:
                    raise StartupError(
                        f"{settings.source}: at 'watch[{index}].output_dir': cannot create "
                        f"{folder.output_dir}: {error.strerror}"
                    ) from None

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGHUP, self._on_reload_signal)

    def _on_reload_signal(self, signum: int, frame: FrameType | None) -> None:
        self.reload_requested = True  # the loop re-reads the config; nothing else here
        self.wake.set()

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
        self.notifier = notify.Notifier.from_environment()
        self.watchdog_seconds = notify.take_watchdog_interval(os.environ, os.getpid())
        self.step_limit_base = notify.step_limit_base(os.environ)
        self.check_folders()
        lock = state.DaemonLock(self.config.state_file)
        try:
            if not lock.acquire():
                raise StartupError(
                    f"{self.config.state_file}: another speechkit-watch daemon is running on this "
                    "state file"
                )
            self.store = state.Store(self.config.state_file)
        except OSError as error:
            raise StartupError(
                f"{lock.path}: cannot lock the state file: {error.strerror}"
            ) from None
        except state.StateFileError as error:
            raise StartupError(str(error)) from None
        store = self.store
        self._alive_while_starting()
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
        self._alive_while_starting()
        self.watcher.start()
        counts = store.counts()
        log.info(
            "started: watching %s; %d file(s) in progress, %d done before",
            ", ".join(shown(folder.path) for folder in self.config.watch),
            sum(counts[name] for name in state.ACTIVE_STATES), counts[state.DONE],
        )  # fmt: skip
        executor = self._new_executor()
        # The start-up scan is the loop's first job: READY must not wait for a large backlog.
        self.notifier.ready(self._status_text(store))
        self.next_ping = self.monotonic()
        try:
            self._loop(store, pipeline, executor)
        finally:
            in_flight = sum(not future.done() for future in self.in_flight.values())
            self.notifier.stopping(f"stopping: {in_flight} step(s) in flight")
            self.watcher.stop()
            clean = self._drain(self.executor or executor)
            api.close()
            self.notifier.close()
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
        next_rescan = self.monotonic()  # the start-up scan, right after READY
        next_sweep = self.monotonic()
        next_backlog_report = self.monotonic()
        while not self.stopping.is_set():
            self.wake.clear()
            if self.reload_requested:
                self.reload_requested = False
                if self._reload(store, pipeline):
                    executor = self.executor or executor
                    next_rescan = self.monotonic()  # new folders: their files are found now
            self._take_hints()
            self._settle(store)
            if self.monotonic() >= next_rescan:
                self._release_dead_owners(store)
                seen = self._scan_all()
                if not self.scanned_once:
                    self.scanned_once = True
                    log.info(
                        "first scan done: %d audio file(s) found, %d new or changed",
                        seen, len(self.settler),
                    )  # fmt: skip
                next_rescan = self.monotonic() + self.config.rescan_seconds
            if self.monotonic() >= next_sweep:
                self._dispatch_sweep(store, pipeline, executor)
                next_sweep = self.monotonic() + SWEEP_SECONDS
            if self.monotonic() >= next_backlog_report:
                self._report_backlog(store, pipeline)
                next_backlog_report = self.monotonic() + BACKLOG_LOG_SECONDS
            self._dispatch(store, pipeline, executor)
            if not self.watcher.alive():
                raise ObserverDiedError(
                    "a folder observer thread died; exiting so that systemd restarts the daemon"
                )
            self._tell_systemd(store)
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
        if self.watchdog_seconds is not None:
            delays.append(self.next_ping - self.monotonic())
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

    def _scan_all(self) -> int:
        """Look at every file of every folder (unchanged known ones cost one stat); how many."""
        seen = 0
        for folder in self.config.watch:
            for path in watching.scan(folder):
                self._note(path, watching.SEEN, folder)
                seen += 1
        return seen

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
            latest = store.latest_for_path(path)  # `transcribe` may have recorded it meanwhile
            if latest is not None and (latest.size, latest.mtime_ns) == version:
                self.known[path] = version
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
        with self._steps_lock:
            self.step_started[row_id] = self.monotonic()
        try:
            if os.environ.get(HANG_VARIABLE) == "step":
                threading.Event().wait()  # a step that never returns, for the watchdog tests
            pipeline.advance(row_id)
        except Exception:
            log.exception("unexpected error while processing file #%d; retrying later", row_id)
            assert self.store is not None  # noqa: S101
            now = self.clock()
            self.store.update(row_id, now, due_at=now + 60.0)
        finally:
            with self._steps_lock:
                self.step_started.pop(row_id, None)

    def _dispatch_sweep(
        self,
        store: state.Store,
        pipeline: Pipeline,
        executor: concurrent.futures.ThreadPoolExecutor,
    ) -> None:
        """Work a crash cut short, in workers: object deletions and hooks."""
        if self.config.storage.delete_after:
            self.background.append(executor.submit(pipeline.sweep_objects))
        if self.config.on_complete is not None:
            self.background.append(executor.submit(pipeline.sweep_hooks))

    @staticmethod
    def _release_dead_owners(store: state.Store) -> None:
        """Rows of a `transcribe` process that died go back to the daemon."""
        for owner in store.owners():
            if not oneshot.owner_alive(owner):
                released = store.release(owner)
                log.info("took over %d file(s) from %s, which is gone", released, owner)

    # -- systemd: status, watchdog ------------------------------------------------------------

    def _new_executor(self) -> concurrent.futures.ThreadPoolExecutor:
        self.executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=self.config.concurrency, thread_name_prefix="step"
        )
        return self.executor

    def _alive_while_starting(self) -> None:
        """Start-up steps (the state file check, temp file cleanup) can be slow on big trees."""
        if self.watchdog_seconds is not None:
            self.notifier.watchdog()

    def _status_text(self, store: state.Store) -> str:
        counts = store.counts()
        text = notify.status_text(
            folders=len(self.config.watch), settling=len(self.settler),
            in_progress=sum(counts[name] for name in state.ACTIVE_STATES),
            done=counts[state.DONE], failed=counts[state.FAILED],
        )  # fmt: skip
        if self.reload_failed:
            text += "; the last reload failed (see the log), running on the previous config"
        return text

    def _tell_systemd(self, store: state.Store) -> None:
        """STATUS when the queue changed; WATCHDOG=1 while healthy. Without systemd only the
        health check runs (a hung step is still logged)."""
        now = self.monotonic()
        if self.notifier.enabled and now >= self.next_status:
            self.next_status = now + STATUS_SECONDS
            text = self._status_text(store)
            if text != self.last_status:
                self.notifier.status(text)
                self.last_status = text
        if now >= self.next_ping:
            self.next_ping = now + (self.watchdog_seconds or HEALTH_CHECK_SECONDS)
            # The observers were checked just before; a hung step withholds the ping.
            if not self._hung_step(store) and self.watchdog_seconds is not None:
                self.notifier.watchdog()

    def _hung_step(self, store: state.Store) -> bool:
        """True if a step has run past its limit without committing progress (logged once).

        Progress is the row's last committed change: each step commits before the next one
        starts, so a long chain of quick steps never adds up to a hang.
        """
        with self._steps_lock:
            running = dict(self.step_started)
        hook = self.config.on_complete
        hung = False
        for row_id, started in running.items():
            row = store.get(row_id)
            seconds = min(self.monotonic() - started, self.clock() - row.updated_at)
            limit = notify.step_limit_seconds(
                size_bytes=row.size, moves_bytes=row.state in (state.QUEUED, state.UPLOADING),
                hook_seconds=0.0 if hook is None else hook.timeout_seconds,
                base_seconds=self.step_limit_base,
            )  # fmt: skip
            if seconds <= limit:
                continue
            hung = True
            if row_id not in self.hung_reported:
                self.hung_reported.add(row_id)
                consequence = (
                    "no longer telling systemd we are alive, so its watchdog restarts the daemon"
                    if self.watchdog_seconds is not None
                    else "restart the daemon if it does not finish"
                )
                log.error(
                    "the %s step of %s has run for %.0f s without progress (limit %.0f s) and "
                    "looks hung; %s",
                    row.state, shown(row.path), seconds, limit, consequence,
                )  # fmt: skip
        self.hung_reported &= set(running)
        return hung

    # -- SIGHUP: reload the config ------------------------------------------------------------

    def _reload(self, store: state.Store, pipeline: Pipeline) -> bool:
        """Re-read the config file; apply it if valid, else keep the running one (False)."""
        self.notifier.reloading(time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000)
        source = self.config.source
        log.info("reloading the config from %s", shown(source))
        try:
            settings = config_module.load(source)
            self.check_folders(settings)
        except (config_module.ConfigError, StartupError) as error:
            problems = error.problems if isinstance(error, config_module.ConfigError) else [error]
            for problem in problems:
                log.error("reload refused: %s", problem)
            log.error("reload refused: still running on the previous config")
            self.reload_failed = True
            self.notifier.ready(self._status_text(store))
            return False
        settings = self._keep_restart_only(settings)
        try:
            added, removed = self.watcher.reschedule(settings.watch)
        except OSError as error:
            log.error("reload refused: cannot watch the new folders: %s", error.strerror or error)
            self.reload_failed = True
            self.notifier.ready(self._status_text(store))
            return False
        old = self.config
        self.config = settings
        pipeline.config = settings
        pipeline.windows[SUBMIT_CALL].limit = settings.quota.submissions_per_hour
        pipeline.windows[CHECK_CALL].limit = settings.quota.status_checks_per_hour
        logs.configure(settings.log_level, settings.secrets())
        self._refit_candidates(settings)
        if settings.concurrency != old.concurrency and self.executor is not None:
            # Steps running in the old pool finish there; new steps go to the new one.
            self.executor.shutdown(wait=False)
            self._new_executor()
        self.reload_failed = False
        log.info(
            "reloaded the config: watching %s (%d added, %d removed)",
            ", ".join(shown(folder.path) for folder in settings.watch), len(added), len(removed),
        )  # fmt: skip
        self.notifier.ready(self._status_text(store))
        return True

    def _keep_restart_only(self, settings: Config) -> Config:
        """The new config with the running values of what only a restart can change."""
        kept = {name: getattr(self.config, name) for name in RESTART_ONLY}
        for name, value in kept.items():
            if getattr(settings, name) != value:
                log.warning(
                    "reload: '%s' changed; it takes effect at the next restart "
                    "(systemctl restart speechkit-watch)",
                    name,
                )
        return dataclasses.replace(settings, **kept)

    def _refit_candidates(self, settings: Config) -> None:
        """Settling files and queued hints follow the new folders; others are let go."""
        settler = watching.Settler(settings.settle_seconds)
        settler.candidates = self.settler.candidates
        self.settler = settler
        for path, observation in list(settler.candidates.items()):
            try:
                observation.folder = watching.folder_for(path, settings.watch)
            except ValueError:
                settler.forget(path)
        for hint in self.watcher.drain():
            try:
                folder = watching.folder_for(hint.path, settings.watch)
            except ValueError:
                continue
            self._note(hint.path, hint.kind, folder)
