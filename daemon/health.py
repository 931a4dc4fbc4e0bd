"""Health: what systemd is told (READY, the STATUS line, WATCHDOG pings) and hung-step detection.

The pings go out only while no step has run past its limit without committing progress; the
folder observers are checked by the main loop before it asks here. Without systemd the same
check still runs, so a hung step is logged either way.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, MutableMapping

from daemon import notify, state
from daemon.config import Config
from daemon.logs import shown

log = logging.getLogger(__name__)

STATUS_SECONDS = 2.0  # systemd's status line follows the queue without a query per loop pass
HEALTH_CHECK_SECONDS = 30.0  # without a systemd watchdog, hung steps are still looked for (logged)


class Health:
    def __init__(self, *, clock: Callable[[], float], monotonic: Callable[[], float]) -> None:
        self.clock = clock
        self.monotonic = monotonic
        # systemd: set from the environment in start(); inert until then.
        self.notifier = notify.Notifier(None)
        self.watchdog_seconds: float | None = None
        self.step_limit_base = notify.STEP_LIMIT_SECONDS
        self.next_ping = 0.0
        self.next_status = 0.0
        self.last_status = ""
        self.step_started: dict[int, float] = {}  # row id -> monotonic start, while a step runs
        self.hung_reported: set[int] = set()
        self._lock = threading.Lock()

    def start(self, environ: MutableMapping[str, str]) -> None:
        self.notifier = notify.Notifier.from_environment()
        self.watchdog_seconds = notify.take_watchdog_interval(environ, os.getpid())
        self.step_limit_base = notify.step_limit_base(environ)

    def alive_while_starting(self) -> None:
        """Start-up steps (the state file check, temp file cleanup) can be slow on big trees."""
        if self.watchdog_seconds is not None:
            self.notifier.watchdog()

    def ready(self, status: str) -> None:
        self.notifier.ready(status)
        self.next_ping = self.monotonic()

    def step_began(self, row_id: int) -> None:
        with self._lock:
            self.step_started[row_id] = self.monotonic()

    def step_ended(self, row_id: int) -> None:
        with self._lock:
            self.step_started.pop(row_id, None)

    def next_ping_in(self) -> float | None:
        """Seconds until the next watchdog ping is due, under systemd's watchdog."""
        if self.watchdog_seconds is None:
            return None
        return self.next_ping - self.monotonic()

    def tell_systemd(self, store: state.Store, config: Config, status: Callable[[], str]) -> None:
        """STATUS when the queue changed; WATCHDOG=1 while healthy. Without systemd only the
        health check runs (a hung step is still logged)."""
        now = self.monotonic()
        if self.notifier.enabled and now >= self.next_status:
            self.next_status = now + STATUS_SECONDS
            text = status()
            if text != self.last_status:
                self.notifier.status(text)
                self.last_status = text
        if now >= self.next_ping:
            self.next_ping = now + (self.watchdog_seconds or HEALTH_CHECK_SECONDS)
            # The observers were checked just before; a hung step withholds the ping.
            if not self.hung_step(store, config) and self.watchdog_seconds is not None:
                self.notifier.watchdog()

    def hung_step(self, store: state.Store, config: Config) -> bool:
        """True if a step has run past its limit without committing progress (logged once).

        Progress is the row's last committed change: each step commits before the next one
        starts, so a long chain of quick steps never adds up to a hang.
        """
        with self._lock:
            running = dict(self.step_started)
        hook = config.on_complete
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
