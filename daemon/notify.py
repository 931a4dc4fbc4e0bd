"""Telling systemd how the daemon is doing: sd_notify over the `NOTIFY_SOCKET` datagram socket.

No libsystemd: the protocol is one datagram of `KEY=VALUE` lines sent to the socket systemd
names in `$NOTIFY_SOCKET` (a path, or an abstract socket written with a leading `@`). Without
that variable every call does nothing, so the daemon behaves the same outside systemd.

The decisions around it are pure functions: how often to ping the watchdog, what the status
line says, and when a worker step has run long enough to count as hung.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping, MutableMapping

log = logging.getLogger(__name__)

SOCKET_VARIABLE = "NOTIFY_SOCKET"
WATCHDOG_USEC_VARIABLE = "WATCHDOG_USEC"
WATCHDOG_PID_VARIABLE = "WATCHDOG_PID"

WATCHDOG_PING_FRACTION = 0.5  # sd_watchdog_enabled(3): ping at half the timeout
MICROSECONDS = 1_000_000

# A healthy step makes a few network calls, each bounded by its timeout (storage: 3 attempts of
# 10 s connect + 60 s read; the API: request_timeout_seconds; a hook: its timeout_seconds), so
# one running this long without committing progress is stuck, not slow.
STEP_LIMIT_SECONDS = 900.0
# Hashing and uploading move the whole file: allow 1 Mbit/s on top, so a 1 GiB upload over a
# slow line (about 2.3 h) never counts as hung; the storage timeouts catch a stalled one.
MIN_TRANSFER_BYTES_PER_SECOND = 128 * 1024
# Overrides STEP_LIMIT_SECONDS (from a unit drop-in's Environment=); the tests set a short
# limit to see a hung step stop the pings.
STEP_LIMIT_VARIABLE = "SPEECHKIT_WATCH_STEP_LIMIT_SECONDS"


def socket_address(value: str) -> str | bytes | None:
    """The address `$NOTIFY_SOCKET` names: a path, or an abstract name (`@name` -> b"\\0name")."""
    if value.startswith("@") and len(value) > 1:
        return b"\0" + os.fsencode(value[1:])
    if value.startswith("/"):
        return value
    return None  # not an AF_UNIX address (e.g. vsock: addresses only a VM host can use)


def watchdog_interval(environ: Mapping[str, str], pid: int) -> float | None:
    """Seconds between watchdog pings, or None when systemd expects none from this process."""
    owner = environ.get(WATCHDOG_PID_VARIABLE)
    if owner and owner.strip() != str(pid):
        return None  # the watchdog is for another process (we were started by one)
    try:
        microseconds = int(environ.get(WATCHDOG_USEC_VARIABLE, ""))
    except ValueError:
        return None
    if microseconds <= 0:
        return None
    return microseconds / MICROSECONDS * WATCHDOG_PING_FRACTION


def take_watchdog_interval(environ: MutableMapping[str, str], pid: int) -> float | None:
    """`watchdog_interval`, then the watchdog variables are removed from `environ`: a child
    (an on_complete hook) must not think the watchdog is its own."""
    interval = watchdog_interval(environ, pid)
    for name in (WATCHDOG_USEC_VARIABLE, WATCHDOG_PID_VARIABLE):
        environ.pop(name, None)
    return interval


def step_limit_seconds(
    *,
    size_bytes: int,
    moves_bytes: bool,
    hook_seconds: float = 0.0,
    base_seconds: float = STEP_LIMIT_SECONDS,
) -> float:
    """How long a step may run without committing progress before it counts as hung.

    `moves_bytes`: the step reads or uploads the whole file (the local check and the upload);
    `hook_seconds`: the on_complete timeout, since a hook runs inside the step that ends a file.
    """
    limit = base_seconds + hook_seconds
    if moves_bytes:
        limit += size_bytes / MIN_TRANSFER_BYTES_PER_SECOND
    return limit


def step_limit_base(environ: Mapping[str, str]) -> float:
    """STEP_LIMIT_SECONDS, or the positive number of seconds in the override variable."""
    try:
        value = float(environ.get(STEP_LIMIT_VARIABLE, ""))
    except ValueError:
        return STEP_LIMIT_SECONDS
    return value if value > 0 else STEP_LIMIT_SECONDS


def status_text(*, folders: int, settling: int, in_progress: int, done: int, failed: int) -> str:
    """The one-line status `systemctl status` shows."""
    return (
        f"watching {folders} folder(s); {settling} settling, {in_progress} in progress, "
        f"{done} done, {failed} failed"
    )


def message(**fields: str | int) -> bytes:
    """One notification: `KEY=VALUE` lines; a value never spans lines (it would forge a key)."""
    lines = []
    for key, value in fields.items():
        text = str(value).replace("\n", " ")
        lines.append(f"{key}={text}")
    return "\n".join(lines).encode("utf-8")


class Notifier:
    """The notify socket of this process; every method does nothing when there is none."""

    def __init__(self, address: str | bytes | None) -> None:
        self.address = address
        self._socket: socket.socket | None = None
        self._warned = False
        if address is not None:
            # Non-blocking: a service manager that falls behind (its queue holds only
            # net.unix.max_dgram_qlen datagrams) must cost us a message, never a stuck loop.
            self._socket = socket.socket(
                socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK
            )

    @classmethod
    def from_environment(cls, environ: MutableMapping[str, str] | None = None) -> Notifier:
        """The notifier `$NOTIFY_SOCKET` describes; the variable is removed from `environ`, so
        a child (an on_complete hook) cannot talk to systemd in our name."""
        environ = os.environ if environ is None else environ
        value = environ.pop(SOCKET_VARIABLE, "")
        return cls(socket_address(value) if value else None)

    @property
    def enabled(self) -> bool:
        return self._socket is not None

    def send(self, **fields: str | int) -> bool:
        """Send one notification; True if it went out. Never raises: systemd may be gone."""
        if self._socket is None or self.address is None:
            return False
        try:
            self._socket.sendto(message(**fields), self.address)
        except OSError as error:
            if not self._warned:  # once: a gone socket would otherwise fill the log
                log.warning("cannot notify systemd at %r: %s", self.address, error.strerror)
                self._warned = True
            return False
        return True

    def ready(self, status: str) -> bool:
        return self.send(READY=1, STATUS=status)

    def status(self, status: str) -> bool:
        return self.send(STATUS=status)

    def watchdog(self) -> bool:
        return self.send(WATCHDOG=1)

    def reloading(self, monotonic_usec: int) -> bool:
        # MONOTONIC_USEC lets systemd >= 253 match the reload to this request.
        return self.send(RELOADING=1, MONOTONIC_USEC=monotonic_usec)

    def stopping(self, status: str) -> bool:
        return self.send(STOPPING=1, STATUS=status)

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
