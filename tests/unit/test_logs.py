"""One event per line, journald priorities, and secrets never shown."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import pytest

from daemon import logs


def _explode() -> None:
    raise ValueError("boom with secret-value-123 inside")


def record(level: int, message: str, *args: object, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            _explode()
        except ValueError:
            exc_info = sys.exc_info()
    return logging.LogRecord("daemon", level, __file__, 1, message, args, exc_info)


def test_journal_lines_carry_the_syslog_priority_and_tracebacks_stay_on_one_line() -> None:
    formatter = logs._OneLineFormatter(logs.JOURNAL_FORMAT)
    assert formatter.format(record(logging.ERROR, "failed %s", "x")) == "<3>ERROR failed x"
    assert formatter.format(record(logging.INFO, "done")) == "<6>INFO done"
    folded = formatter.format(record(logging.ERROR, "crash", exc=True))
    assert "\n" not in folded
    assert "ValueError" in folded


def test_secrets_are_redacted_in_messages_and_tracebacks() -> None:
    redact = logs.RedactingFilter(["secret-value-123", "ab"])  # too short to redact safely
    message = record(logging.ERROR, "key %s refused", "secret-value-123", exc=True)
    assert redact.filter(message)
    formatted = logs._OneLineFormatter(logs.TERMINAL_FORMAT).format(message)
    assert "secret-value-123" not in formatted
    assert "key *** refused" in formatted
    assert "boom with *** inside" in formatted


def test_file_names_are_quoted_so_a_newline_cannot_split_an_event() -> None:
    assert logs.shown("/in/new\nline.ogg") == '"/in/new\\nline.ogg"'
    assert logs.shown("/in/звонок.ogg") == '"/in/звонок.ogg"'


def test_journal_stream_counts_only_when_it_is_our_stderr(tmp_path: Path) -> None:
    target = tmp_path / "stream"
    descriptor = os.open(target, os.O_WRONLY | os.O_CREAT)
    try:
        found = os.fstat(descriptor)
        mine = {"JOURNAL_STREAM": f"{found.st_dev}:{found.st_ino}"}
        assert logs.stderr_is_journal(mine, descriptor)
        assert not logs.stderr_is_journal({"JOURNAL_STREAM": "1:2"}, descriptor)  # inherited
        assert not logs.stderr_is_journal({}, descriptor)
    finally:
        os.close(descriptor)


def test_secrets_learned_at_run_time_are_redacted_too() -> None:
    redact = logs.RedactingFilter([])
    logs.add_secret("t1.fresh-iam-token-value")
    message = record(logging.INFO, "header Bearer %s", "t1.fresh-iam-token-value")
    assert redact.filter(message)
    assert message.getMessage() == "header Bearer ***"


@pytest.mark.parametrize(
    ("seconds", "precision", "shown"),
    [(14, 1, "14 s"), (4.5, 1, "4.5 s"), (185, 1, "3 min 05 s"), (3540, 1, "59 min"),
     (14400, 1, "4 h"), (14460, 1, "4 h 01 min"), (14401, 1, "4 h 00 min 01 s"),
     (43200, 1, "12 h"), (90, 60, "2 min"), (7200, 60, "2 h"), (12000, 60, "3 h 20 min"),
     (5, 60, "1 min")],
)  # fmt: skip
def test_one_way_to_say_a_duration(seconds: float, precision: float, shown: str) -> None:
    assert logs.duration(seconds, precision=precision) == shown


def test_upload_progress_is_logged_every_tenth_with_its_rate(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from daemon.steps import UploadProgress  # noqa: PLC0415 - the steps module is heavy

    clock = iter([0.0, 1.0, 2.0, 3.0, 4.0])
    progress = UploadProgress(Path("/in/big.wav"), 1_000_000, lambda: next(clock))
    caplog.set_level(logging.INFO, logger="daemon.progress")
    for _ in range(4):
        progress(250_000)
    lines = [record.getMessage() for record in caplog.records]
    assert lines == [
        'uploading "/in/big.wav": 20% of 1.0 MB, 0.2 MB/s',
        'uploading "/in/big.wav": 50% of 1.0 MB, 0.2 MB/s',
        'uploading "/in/big.wav": 70% of 1.0 MB, 0.2 MB/s',
        'uploading "/in/big.wav": 100% of 1.0 MB, 0.2 MB/s',
    ]
