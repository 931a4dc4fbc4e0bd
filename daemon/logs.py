"""Logging to stderr: one event per line, readable in journald, secrets never shown.

Under systemd (`JOURNAL_STREAM` set) journald adds its own timestamps, so ours are left out.
File names are shown as JSON strings so that a newline in a name cannot split an event.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from collections.abc import Iterable

# `<N>` is the syslog priority; journald reads it (SyslogLevelPrefix=yes, the default), so
# `journalctl -p err` shows the errors.
JOURNAL_FORMAT = "<%(priority)d>%(levelname)s %(message)s"
SYSLOG_PRIORITIES = {"DEBUG": 7, "INFO": 6, "WARNING": 4, "ERROR": 3, "CRITICAL": 2}
TERMINAL_FORMAT = "%(asctime)s %(levelname)s %(message)s"
# Shorter "secrets" (placeholders like `x`) would mask ordinary words in every line (and so give
# themselves away); the config warns about them instead (validate.Validator.short_secret).
MIN_SECRET_LENGTH = 6


def duration(seconds: float, *, precision: float = 1.0) -> str:
    """A duration for people, to `precision` seconds (1 or 60): "14 s", "4.5 s", "3 min 05 s",
    "59 min", "4 h", "4 h 01 min", "4 h 00 min 01 s". Zeros at the end are left out, so a limit
    reads "4 h"; below a minute, a fraction is kept to a tenth ("4.5 s")."""
    if precision >= 60:
        seconds = max(60, round(seconds / 60) * 60)
    elif seconds < 60 and seconds != int(seconds):
        return f"{max(0.0, seconds):.1f} s"
    whole = max(0, round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if not hours:
        if not minutes:
            return f"{secs} s"
        return f"{minutes} min" + (f" {secs:02d} s" if secs else "")
    text = f"{hours} h"
    if minutes or secs:
        text += f" {minutes:02d} min"
    return text + (f" {secs:02d} s" if secs else "")


def shown(path: object) -> str:
    """A file name for a log line: quoted, control characters escaped, unicode kept."""
    return json.dumps(os.fsdecode(str(path)), ensure_ascii=False)


MAX_RUNTIME_SECRETS = 64  # renewed IAM tokens: the newest are kept; old ones no longer work
_runtime_secrets: list[str] = []  # secrets learned while running (IAM tokens)
_runtime_lock = threading.Lock()


def add_secret(value: str) -> None:
    """Redact a secret learned at run time (a new IAM token) from every later log line."""
    if len(value) < MIN_SECRET_LENGTH:
        return
    with _runtime_lock:
        if value not in _runtime_secrets:
            _runtime_secrets.append(value)
            del _runtime_secrets[:-MAX_RUNTIME_SECRETS]


class RedactingFilter(logging.Filter):
    """Last line of defence: replaces any known secret in a formatted message with ***."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self.configured = [secret for secret in secrets if len(secret) >= MIN_SECRET_LENGTH]

    def secrets(self) -> list[str]:
        """Configured and run-time secrets, longest first (no partial leftovers)."""
        with _runtime_lock:
            known = [*self.configured, *_runtime_secrets]
        return sorted(known, key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = self.secrets()
        if not secrets:
            return True
        message = record.getMessage()
        redacted = message
        for secret in secrets:
            redacted = redacted.replace(secret, "***")
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info:
            text = logging.Formatter().formatException(record.exc_info)
            for secret in secrets:
                text = text.replace(secret, "***")
            record.exc_text, record.exc_info = text, None
        return True


def stderr_is_journal(environ: dict[str, str] | os._Environ[str], stderr_fd: int = 2) -> bool:
    """True when stderr is the journal stream systemd gave us (not one a parent passed on)."""
    device_inode = environ.get("JOURNAL_STREAM", "")
    if ":" not in device_inode:
        return False
    try:
        found = os.fstat(stderr_fd)
    except OSError:
        return False
    return device_inode == f"{found.st_dev}:{found.st_ino}"


class _OneLineFormatter(logging.Formatter):
    """Tracebacks are folded into the same event (journald shows one entry per line)."""

    def format(self, record: logging.LogRecord) -> str:
        record.priority = SYSLOG_PRIORITIES.get(record.levelname, 6)
        return super().format(record).replace("\n", " | ")


def configure(level: str, secrets: Iterable[str] = ()) -> None:
    under_journald = stderr_is_journal(os.environ)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_OneLineFormatter(JOURNAL_FORMAT if under_journald else TERMINAL_FORMAT))
    handler.addFilter(RedactingFilter(secrets))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Library chatter (connection pools, boto's credential lookups) is noise at info level.
    for noisy in ("botocore", "boto3", "s3transfer", "urllib3", "watchdog"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
