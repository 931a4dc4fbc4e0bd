"""The daemon's main loop and lifecycle: start-up, waiting, dispatching steps, signals, reload.

One thread (this loop) decides what runs; a bounded pool of worker threads runs the steps
(`Steps.advance`); watchdog's observer threads only enqueue hints. The loop sleeps until the next
thing is due or a hint arrives, so an idle daemon costs nothing. Signal handlers only set a flag.
What the loop drives lives elsewhere: `intake` (hints to settled file versions), `steps` (one
file's next step), `health` (systemd and hung steps), `wallclock` (the schedule follows a set
clock). SIGHUP re-reads the config; a broken one is logged and ignored.
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

from daemon import (
    audio,
    gate,
    logs,
    metrics,
    notify,
    oneshot,
    quota,
    state,
    uploads,
    watching,
    webhooks,
)
from daemon import config as config_module
from daemon.config import Config
from daemon.health import Health
from daemon.intake import Intake
from daemon.logs import shown
from daemon.render import files
from daemon.speechkit import backends
from daemon.steps import Context, Steps
from daemon.storage import ObjectStore
from daemon.wallclock import WallClock

log = logging.getLogger(__name__)

DRAIN_SECONDS = 8.0  # on SIGTERM, steps in flight get this long to reach a safe point (< 10 s)
IDLE_WAKE_SECONDS = 5.0  # the loop checks its threads at least this often
SWEEP_SECONDS = 3600.0  # objects whose deletion failed are retried hourly
DELETE_BATCH_SECONDS = 1.0  # finished files' objects are deleted together, this often at most
BACKLOG_LOG_SECONDS = 600.0  # a quota backlog is reported every ten minutes while it lasts
# While the state file cannot be written (a full disk), steps wait this long, doubling up to the
# cap: space that comes back is used within seconds, and a full disk costs no busy loop.
STATE_RETRY_FIRST_SECONDS = 1.0
STATE_RETRY_MAX_SECONDS = 5.0
STATE_FILE_CHECK_SECONDS = 2.0  # how often the loop makes sure its state file is still there
# Test hook like the crash points: SPEECHKIT_WATCH_HANG_AT=step makes every step block forever.
HANG_VARIABLE = "SPEECHKIT_WATCH_HANG_AT"
# Sections a reload cannot change: in-flight steps hold the adapters built from them (and
# credentials from LoadCredential= are only refreshed by a restart anyway).
RESTART_ONLY = ("storage", "speechkit", "state_file", "metrics")
WEBHOOK_STOP_SECONDS = 1.0  # a delivery in flight at a stop is sent again at the next start


def seconds_since_boot() -> float:
    """A clock that never jumps and, unlike time.monotonic(), counts through a suspend: a laptop
    that slept has not had its wall clock stepped."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


class RestartNeededError(Exception):
    """The daemon cannot go on as it is: exit non-zero so the service manager restarts it."""


class ObserverDiedError(RestartNeededError):
    """A watchdog observer thread is gone."""


class DelivererDiedError(RestartNeededError):
    """The webhook delivery thread is gone."""


class StateFileGoneError(RestartNeededError):
    """The state file was deleted or replaced under the running daemon."""


class StartupError(Exception):
    """The daemon cannot start (folder missing, state file unusable): one clear line, exit 2."""


class Service:
    def __init__(
        self,
        config: Config,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        since_boot: Callable[[], float] = seconds_since_boot,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.monotonic = monotonic
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self.stopping = threading.Event()
        self.wake = watching.Waker()  # set from signal handlers too: must be reentrant
        self.signals_received = 0
        self.watcher = watching.Watcher(config.watch, self.wake)
        self.intake = Intake(config, self.watcher, self.wake, clock=clock, monotonic=monotonic)
        self.health = Health(clock=clock, monotonic=monotonic)
        self.wallclock = WallClock(clock=clock, since_boot=since_boot)
        self.in_flight: dict[int, concurrent.futures.Future[None]] = {}
        self.store: state.Store | None = None
        self.deliverer: webhooks.Deliverer | None = None
        self.scanned_once = False
        self.background: list[concurrent.futures.Future[Any]] = []
        self.deleting: concurrent.futures.Future[None] | None = None  # a batch of deletions
        self.aftercare_waiting = False  # objects wait for their batch deletion
        self.next_deletions = 0.0  # monotonic: when the next batch may go
        self.executor: concurrent.futures.ThreadPoolExecutor | None = None
        self.reload_requested = False
        self.reload_failed = False
        # A state-file write episode: no steps until `state_paused_until` (monotonic).
        self.state_paused_until = 0.0
        self.state_retry_seconds = 0.0  # 0: no episode
        self._state_lock = threading.Lock()

    # -- lifecycle -----------------------------------------------------------------------------

    def check_folders(self, settings: Config | None = None) -> None:
        """A path that is not a folder is a config error; a watch folder that does not exist
        (yet: a late mount) is logged and waited for, and the others are watched meanwhile."""
        settings = settings or self.config
        for index, folder in enumerate(settings.watch):
            key = f"{settings.source}: at 'watch[{index}].path'"
            try:
                is_folder = folder.path.is_dir()  # False if missing; raises for other errors
            except OSError as error:
                raise StartupError(
                    f"{key}: cannot look at folder {folder.path}: {error.strerror}"
                ) from None
            if not is_folder and not folder.path.exists():
                log.warning(
                    "%s: watch folder %s does not exist (yet); waiting for it to appear "
                    "(a late mount?)",
                    key, shown(folder.path),
                )  # fmt: skip
                continue  # its output_dir too may live on the mount that is not there yet
            if not is_folder:
                raise StartupError(f"{key}: {folder.path} is not a folder")
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
        self.health.start(os.environ)
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
        self.wallclock.start(store)  # before the gate reads the quota's calls
        self.health.alive_while_starting()
        objects = None if self.config.storage is None else ObjectStore(self.config.storage)
        apis = backends.Backends(self.config.speechkit)
        api = apis.configured  # closing it closes the other API's too (shared transport)
        context = Context(
            self.config, store, objects, api, clock=self.clock, rng=self.rng,
            stopping=self.stopping, on_changed=self.intake.file_changed, other_api=apis.for_api,
        )  # fmt: skip
        context.delete_in_batches = True  # sent by this loop
        context.uploads = uploads.Board(self.config.state_file, self.clock)
        steps = Steps(context)
        self._start_metrics(store, steps)
        deliverer = webhooks.Deliverer(self.config, store, clock=self.clock, rng=self.rng)
        self.deliverer = deliverer
        context.events_ready = deliverer.wake
        deliverer.start()
        removed = files.clean_temp_files(
            self._output_folders(), recursive=any(folder.recursive for folder in self.config.watch)
        )
        if removed:
            log.info("removed %d temp file(s) left by an earlier crash", len(removed))
        converted = audio.clean_work_dir(audio.work_dir_for(self.config.state_file))
        if converted:
            log.info("removed %d conversion(s) left by an earlier run", converted)
        self.intake.load_known(store.each_known_version())
        self.health.alive_while_starting()
        self.watcher.start()
        counts = store.counts()
        log.info(
            "started: watching %s; %d file(s) in progress, %d done before",
            ", ".join(shown(folder.path) for folder in self.config.watch),
            sum(counts[name] for name in state.ACTIVE_STATES), counts[state.DONE],
        )  # fmt: skip
        executor = self._new_executor()
        # The start-up scan is the loop's first job: READY must not wait for a large backlog.
        self.health.ready(self._status_text(store))
        try:
            self._loop(store, steps, executor)
        finally:
            in_flight = sum(not future.done() for future in self.in_flight.values())
            self.health.notifier.stopping(f"stopping: {in_flight} step(s) in flight")
            self.watcher.stop()
            deliverer.stop(WEBHOOK_STOP_SECONDS)
            self.next_deletions = 0.0  # the last batch goes now, within the drain's time
            self._dispatch_deletions(steps, self.executor or executor)
            clean = self._drain(self.executor or executor)
            if clean:
                # Steps that ended during the drain queued their objects after that batch.
                self._delete_last_objects(steps)
            self._write_accepted_operations(steps)
            api.close()
            self.health.notifier.close()
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

    def _start_metrics(self, store: state.Store, steps: Steps) -> None:
        """The Prometheus endpoint, when configured; an address that cannot be bound stops the
        start like a config error."""
        if self.config.metrics is None:
            return
        listen = self.config.metrics.listen

        def limits() -> dict[str, int]:  # the config of now: a reload changes limits
            return gate.reported_limits(self.config)[0]

        def per_second_limits() -> dict[str, int]:
            return gate.reported_limits(self.config)[1]

        collector = metrics.StateCollector(
            store,
            clock=self.clock,
            quota_limits=limits,
            paused=steps.gate.credentials_paused,
            per_second_limits=per_second_limits,
        )
        try:
            metrics.serve(listen, collector)
        except OSError as error:
            raise StartupError(
                f"{self.config.source}: at 'metrics.listen': cannot listen on {listen}: "
                f"{error.strerror or error}"
            ) from None
        log.info("metrics: serving Prometheus metrics at http://%s/metrics", listen)

    @staticmethod
    def _write_accepted_operations(steps: Steps) -> None:
        """At a stop, one last try at writing operation ids the state file could not take."""
        if not steps.unwritten_operations:
            return
        try:
            steps.write_unwritten_operations()
        except state.StateWriteError as error:
            log.error(
                "%s: operation(s) %s were accepted but are not recorded; after a restart their "
                "files are submitted again",
                error, ", ".join(operation for operation, _ in
                                 steps.unwritten_operations.values()),
            )  # fmt: skip

    def _delete_last_objects(self, steps: Steps) -> None:
        """The objects of files that finished while the daemon stopped, deleted now rather
        than left in the (billed) bucket until the next start's sweep."""
        if not steps.aftercare.deletions_waiting():
            return
        try:
            steps.aftercare.delete_waiting_objects()
        except state.StateWriteError as error:  # deleted, not recorded: the sweep sees it
            log.warning("%s", error)

    def _drain(self, executor: concurrent.futures.ThreadPoolExecutor) -> bool:
        executor.shutdown(wait=False, cancel_futures=True)
        futures = [*self.in_flight.values(), *self.background]
        if self.deleting is not None:
            futures.append(self.deleting)
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
        steps: Steps,
        executor: concurrent.futures.ThreadPoolExecutor,
    ) -> None:
        next_rescan = self.monotonic()  # the start-up scan, right after READY
        next_sweep = self.monotonic()
        next_backlog_report = self.monotonic()
        next_state_check = self.monotonic()
        while not self.stopping.is_set():
            self.wake.clear()
            self.wallclock.follow(store, steps.gate, self.in_flight)
            if self.reload_requested:
                self.reload_requested = False
                if self._reload(store, steps):
                    executor = self.executor or executor
                    next_rescan = self.monotonic()  # new folders: their files are found now
            self.intake.take_hints()
            self._settle(store)
            self.intake.refresh_folders()  # gone, back or replaced: before the alive() check
            if self.monotonic() >= next_rescan:
                self._release_dead_owners(store)
                seen = self.intake.scan_all()
                if not self.scanned_once:
                    self.scanned_once = True
                    log.info(
                        "first scan done: %d audio file(s) found, %d new or changed",
                        seen, len(self.intake),
                    )  # fmt: skip
                next_rescan = self.monotonic() + self.config.rescan_seconds
            if self.monotonic() >= next_sweep:
                self._dispatch_sweep(store, steps, executor)
                next_sweep = self.monotonic() + SWEEP_SECONDS
            if self.monotonic() >= next_backlog_report:
                self._report_backlog(store, steps)
                next_backlog_report = self.monotonic() + BACKLOG_LOG_SECONDS
            self._dispatch(store, steps, executor)
            self._dispatch_deletions(steps, executor)
            if not self.watcher.alive():
                raise ObserverDiedError(
                    "a folder observer thread died; exiting so that systemd restarts the daemon"
                )
            if self.deliverer is not None and not self.deliverer.alive():
                raise DelivererDiedError(
                    "the webhook delivery thread died; exiting so that systemd restarts the daemon"
                )
            self.health.tell_systemd(store, self.config, lambda: self._status_text(store))
            if self.monotonic() >= next_state_check:
                self._check_state_file(store)
                next_state_check = self.monotonic() + STATE_FILE_CHECK_SECONDS
            self.wake.wait(self._sleep_seconds(store, next_rescan))

    @staticmethod
    def _check_state_file(store: state.Store) -> None:
        why = store.replaced()
        if why is not None:
            raise StateFileGoneError(
                f"{store.path}: the state file changed under the running daemon ({why}); "
                "exiting so that the service manager starts it again on the file as it is now "
                "(files whose outputs are already there are not transcribed again)"
            )

    def _report_backlog(self, store: state.Store, steps: Steps) -> None:
        backlog = store.backlog()
        window = steps.gate.windows[gate.SUBMIT_CALL]
        seconds = quota.backlog_seconds(backlog, window.limit, window.used(self.clock()))
        if seconds > 0:
            log.warning(
                "%d file(s) wait for submission, more than the quota of %d an hour allows at "
                "once; submitting them all takes about %s",
                backlog, window.limit, logs.duration(seconds, precision=60),
            )  # fmt: skip

    def _sleep_seconds(self, store: state.Store, next_rescan: float) -> float:
        delays = [IDLE_WAKE_SECONDS, next_rescan - self.monotonic()]
        ping = self.health.next_ping_in()
        if ping is not None:
            delays.append(ping)
        if len(self.intake):
            delays.append(watching.settle_poll_seconds(self.config.settle_seconds))
        if self.deleting is None and self.aftercare_waiting:
            delays.append(self.next_deletions - self.monotonic())
        if self._state_paused():
            delays.append(self.state_paused_until - self.monotonic())
        elif len(self.in_flight) < self.config.concurrency:
            due = store.next_due_at(exclude=self.in_flight)
            if due is not None:
                delays.append(due - self.clock())
        return max(0.0, min(delays))

    def _settle(self, store: state.Store) -> None:
        if self._state_paused():
            return  # settled files stay candidates until they can be recorded
        try:
            if self.intake.settle(store):
                self._state_writable()
        except state.StateWriteError as error:
            self._state_unwritable(error)

    def _dispatch(
        self,
        store: state.Store,
        steps: Steps,
        executor: concurrent.futures.ThreadPoolExecutor,
    ) -> None:
        for row_id, future in list(self.in_flight.items()):
            if future.done():
                del self.in_flight[row_id]
                error = future.exception()
                if error is not None:
                    log.error("a step of file #%d failed unexpectedly: %r", row_id, error)
        free = self.config.concurrency - len(self.in_flight)
        if free <= 0 or self._state_paused():
            return
        for row in store.due(self.clock(), limit=free, exclude=self.in_flight):
            future = executor.submit(self._advance_safely, steps, row.id)
            self.in_flight[row.id] = future
            future.add_done_callback(lambda _: self.wake.set())

    def _advance_safely(self, steps: Steps, row_id: int) -> None:
        self.health.step_began(row_id)
        try:
            if os.environ.get(HANG_VARIABLE) == "step":
                threading.Event().wait()  # a step that never returns, for the watchdog tests
            steps.advance(row_id)
            self._state_writable()
        except state.StateWriteError as error:
            self._state_unwritable(error)
        except Exception:
            log.exception("unexpected error while processing file #%d; retrying later", row_id)
            assert self.store is not None  # noqa: S101
            now = self.clock()
            try:
                self.store.update(row_id, now, due_at=now + 60.0)
            except state.StateWriteError as error:
                self._state_unwritable(error)
        finally:
            self.health.step_ended(row_id)

    # -- the state file cannot be written --------------------------------------------------------

    def _state_paused(self) -> bool:
        return self.monotonic() < self.state_paused_until

    def _state_unwritable(self, error: state.StateWriteError) -> None:
        """A write failed: no step runs until a backoff passes; one log line per episode.

        The failed step changed nothing (its transaction was undone and no quota was used), so
        it is simply taken again once the file can be written.
        """
        with self._state_lock:
            starting = self.state_retry_seconds == 0.0
            self.state_retry_seconds = min(
                STATE_RETRY_MAX_SECONDS,
                max(STATE_RETRY_FIRST_SECONDS, self.state_retry_seconds * 2),
            )
            self.state_paused_until = self.monotonic() + self.state_retry_seconds
        if starting:
            log.error(
                "%s; nothing is submitted and no step runs until it can be written (tried again "
                "every few seconds)",
                error,
            )
        self.wake.set()

    def _state_writable(self) -> None:
        with self._state_lock:
            ending = self.state_retry_seconds != 0.0
            self.state_retry_seconds = 0.0
        if ending:
            log.info("the state file can be written again; work resumes")

    def _dispatch_sweep(
        self,
        store: state.Store,
        steps: Steps,
        executor: concurrent.futures.ThreadPoolExecutor,
    ) -> None:
        """Work a crash cut short, in workers: object deletions and hooks; and retention."""
        self.background.append(executor.submit(steps.aftercare.sweep_retention))
        if self.config.storage is not None and self.config.storage.delete_after:
            self.background.append(executor.submit(steps.aftercare.sweep_objects))
        if self.config.on_complete is not None:
            self.background.append(executor.submit(steps.aftercare.sweep_hooks))

    def _dispatch_deletions(
        self, steps: Steps, executor: concurrent.futures.ThreadPoolExecutor
    ) -> None:
        """Objects of finished files go in one request a DELETE_BATCH_SECONDS, in a worker."""
        if self.deleting is not None and self.deleting.done():
            self.deleting = None
        self.aftercare_waiting = steps.aftercare.deletions_waiting()
        due = self.deleting is None and self.aftercare_waiting
        if due and self.monotonic() >= self.next_deletions:
            self.deleting = executor.submit(steps.aftercare.delete_waiting_objects)
            self.deleting.add_done_callback(lambda _: self.wake.set())
            self.next_deletions = self.monotonic() + DELETE_BATCH_SECONDS

    def _release_dead_owners(self, store: state.Store) -> None:
        """Rows of a `transcribe` process that died go back to the daemon."""
        for owner in store.owners():
            if not oneshot.owner_alive(owner):
                try:
                    released = store.release(owner)
                except state.StateWriteError as error:
                    self._state_unwritable(error)
                    return
                log.info("took over %d file(s) from %s, which is gone", released, owner)

    # -- systemd -------------------------------------------------------------------------------

    def _new_executor(self) -> concurrent.futures.ThreadPoolExecutor:
        self.executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=self.config.concurrency, thread_name_prefix="step"
        )
        return self.executor

    def _status_text(self, store: state.Store) -> str:
        counts = store.counts()
        text = notify.status_text(
            folders=len(self.config.watch), settling=len(self.intake),
            in_progress=sum(counts[name] for name in state.ACTIVE_STATES),
            done=counts[state.DONE], failed=counts[state.FAILED],
        )  # fmt: skip
        if self.reload_failed:
            text += "; the last reload failed (see the log), running on the previous config"
        return text

    # -- SIGHUP: reload the config ------------------------------------------------------------

    def _reload(self, store: state.Store, steps: Steps) -> bool:
        """Re-read the config file; apply it if valid, else keep the running one (False)."""
        self.health.notifier.reloading(time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000)
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
            self.health.notifier.ready(self._status_text(store))
            return False
        settings = self._keep_restart_only(settings)
        try:
            added, removed = self.watcher.reschedule(settings.watch)
        except OSError as error:
            log.error("reload refused: cannot watch the new folders: %s", error.strerror or error)
            self.reload_failed = True
            self.health.notifier.ready(self._status_text(store))
            return False
        old = self.config
        self.config = settings
        steps.config = settings  # the gate's limits and what follows a file's end, too
        if self.deliverer is not None:
            self.deliverer.config = settings  # receivers and their secrets
        logs.configure(settings.log_level, settings.secrets())
        self.intake.refit(settings)
        if settings.concurrency != old.concurrency and self.executor is not None:
            # Steps running in the old pool finish there; new steps go to the new one.
            self.executor.shutdown(wait=False)
            self._new_executor()
        self.reload_failed = False
        log.info(
            "reloaded the config: watching %s (%d added, %d removed)",
            ", ".join(shown(folder.path) for folder in settings.watch), len(added), len(removed),
        )  # fmt: skip
        self.health.notifier.ready(self._status_text(store))
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
