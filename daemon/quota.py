"""Staying inside the service's hourly quotas, and pausing while credentials are refused.

`SlidingWindow` is a pure sliding-window counter over an injected clock: a burst up to the
hourly allowance goes out at once, then calls are paced so that no 3,600 s window ever holds
more than the limit. `Pause` is the shared switch that stops every call to one service while
its credentials are refused, so a revoked key costs one request a minute, not one per file.
"""

from __future__ import annotations

import collections
import contextlib
import threading
from collections.abc import Iterable

WINDOW_SECONDS = 3600.0  # the quotas are per hour


class SlidingWindow:
    """At most `limit` events in any `window` seconds. Thread-safe."""

    def __init__(
        self, limit: int, window: float = WINDOW_SECONDS, history: Iterable[float] = ()
    ) -> None:
        self.limit = limit
        self.window = window
        self._events: collections.deque[float] = collections.deque(sorted(history))
        self._lock = threading.Lock()

    def _forget(self, now: float) -> None:
        while self._events and self._events[0] <= now - self.window:
            self._events.popleft()

    def acquire(self, now: float) -> float:
        """Take one slot if there is one (returns 0), else the seconds until one frees up."""
        with self._lock:
            self._forget(now)
            if len(self._events) < self.limit:
                self._events.append(now)
                return 0.0
            return self._events[len(self._events) - self.limit] + self.window - now

    def wait_for_slot(self, now: float, *, ahead: int = 0) -> float:
        """Seconds until a slot is free for one more call after `ahead` calls already waiting;
        nothing is taken. Past a whole window of waiting calls: the window (look again then)."""
        with self._lock:
            self._forget(now)
            free = self.limit - len(self._events)
            if ahead < free:
                return 0.0
            index = ahead - free  # the event whose expiry frees the slot this call needs
            if index >= len(self._events):
                return self.window
            return max(0.0, self._events[index] + self.window - now)

    def release(self, at: float) -> None:
        """Give back the slot taken at `at` (the call was never made)."""
        with self._lock, contextlib.suppress(ValueError):
            self._events.remove(at)

    def used(self, now: float) -> int:
        with self._lock:
            self._forget(now)
            return len(self._events)

    def shift(self, step: float, now: float) -> None:
        """Move every call by a step of the wall clock, so that a call made a minute ago still
        counts as a minute old; none is left after `now` (a call cannot lie in the future)."""
        with self._lock:
            self._events = collections.deque(min(at + step, now) for at in self._events)


def backlog_seconds(backlog: int, limit_per_hour: int, used_in_last_hour: int) -> float:
    """Rough time to submit `backlog` files at `limit_per_hour` with some of this hour used."""
    free = max(0, limit_per_hour - used_in_last_hour)
    if backlog <= free:
        return 0.0
    return (backlog - free) / limit_per_hour * WINDOW_SECONDS


class Pause:
    """A service-wide pause after refused credentials; steps wait for it instead of calling."""

    def __init__(self) -> None:
        self._until = 0.0
        self._lock = threading.Lock()

    def pause(self, until: float) -> bool:
        """Pause until `until`; True if this starts a pause (the caller logs it once)."""
        with self._lock:
            starting = self._until == 0.0
            self._until = max(self._until, until)
            return starting

    def resume(self) -> bool:
        """End the pause; True if there was one (the caller logs the recovery)."""
        with self._lock:
            was_paused = self._until != 0.0
            self._until = 0.0
            return was_paused

    def paused(self) -> bool:
        """Whether a pause holds now (a look that, unlike blocked_until, lets no probe go)."""
        with self._lock:
            return self._until != 0.0

    def blocked_until(self, now: float, probe_seconds: float) -> float | None:
        """The time to wait for, or None when this caller may call.

        When a pause runs out, exactly one caller is let through as the probe; the others wait
        `probe_seconds` more, by which time the probe has resumed or renewed the pause.
        """
        with self._lock:
            if self._until == 0.0:
                return None
            if now >= self._until:
                self._until = now + probe_seconds
                return None
            return self._until

    def shift(self, step: float) -> None:
        """Move the end of a pause by a step of the wall clock: it lasts as long as it would."""
        with self._lock:
            if self._until != 0.0:
                self._until += step
