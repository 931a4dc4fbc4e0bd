"""Following the wall clock: when it is set, the schedule moves with it.

Due times, quota windows and pauses are wall-clock times (due times must survive a restart),
while waiting is monotonic. So when the wall clock is set (back an hour: everything would stall
an hour; forward: every check at once, and the quota's hour cut short), the schedule is moved by
the same amount. The step itself is found by a pure function (`scheduling.wall_clock_step`)
comparing the wall clock with the time since boot.
"""

from __future__ import annotations

import concurrent.futures
import logging
from collections.abc import Callable, Mapping

from daemon import scheduling, state
from daemon.gate import Gate

log = logging.getLogger(__name__)


class WallClock:
    def __init__(self, *, clock: Callable[[], float], since_boot: Callable[[], float]) -> None:
        self.clock = clock
        self.since_boot = since_boot
        self.offset: float | None = None  # wall clock - since_boot: jumps with a step
        # Steps running when the wall clock stepped: they may write times read before it.
        self.racing_step: dict[int, concurrent.futures.Future[None]] = {}
        self.pull_in_pending = False  # times after the wall clock's "now" may still be stored
        self.write_failed = False  # moving the schedule failed (logged once)

    def start(self, store: state.Store) -> None:
        """At start: times written by a wall clock ahead of this one (it stepped back while the
        daemon was stopped) are pulled in, before the quota windows are read."""
        now = self.clock()
        self.offset = now - self.since_boot()
        self.pull_in_pending = True
        moved = self._pull_in_future_times(store, now)
        if moved:
            log.warning(
                "the wall clock is behind the times in the state file (it was set back while the "
                "daemon was stopped); due times of %d unfinished file(s) moved back with it",
                moved,
            )

    def follow(
        self,
        store: state.Store,
        gate: Gate,
        in_flight: Mapping[int, concurrent.futures.Future[None]],
    ) -> None:
        """Once per loop pass: a step of the wall clock moves the schedule by the same amount."""
        now = self.clock()
        offset = now - self.since_boot()
        step = scheduling.wall_clock_step(self.offset, offset)
        if step:
            try:
                moved = store.shift_times(step, now)
            except state.StateFileError as error:
                self._unwritten(error)
                return  # the offset is kept: the same step is seen, and moved, at the next pass
            for window in gate.windows.values():
                window.shift(step, now)
            for pause in gate.pauses.values():
                pause.shift(step)
            log.warning(
                "the wall clock stepped %s by %.0f s; due times moved with it (%d unfinished "
                "file(s))",
                "back" if step < 0 else "forward", abs(step), moved,
            )  # fmt: skip
            # A step running now may have read the clock before it stepped and write old times.
            self.racing_step = dict(in_flight)
            self.pull_in_pending = True
        self.offset = offset
        if self.pull_in_pending:
            # Until every racing step is done (what they wrote is committed by then).
            self.racing_step = {row: future for row, future in self.racing_step.items()
                                if not future.done()}  # fmt: skip
            self._pull_in_future_times(store, now)
            for window in gate.windows.values():
                window.shift(0.0, now)  # calls taken with a clock read before the step

    def _pull_in_future_times(self, store: state.Store, now: float) -> int:
        """Rows and calls with times after `now`; pending again while racing steps run."""
        try:
            moved = store.pull_in_future_times(
                now, tolerance=scheduling.CLOCK_STEP_TOLERANCE_SECONDS
            )
        except state.StateFileError as error:
            self._unwritten(error)
            return 0  # still pending: tried again at the next pass
        self.pull_in_pending = bool(self.racing_step)
        self.write_failed = False
        return moved

    def _unwritten(self, error: state.StateFileError) -> None:
        if not self.write_failed:
            log.warning("cannot move due times with the wall clock yet (tried again): %s", error)
        self.write_failed = True
