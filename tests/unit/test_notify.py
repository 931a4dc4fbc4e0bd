"""sd_notify without libsystemd: addresses, the watchdog interval, the hang limit, and real
datagrams on a socket the test binds (a path one and an abstract one)."""

from __future__ import annotations

import secrets
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon import notify

GIB = 1024**3


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short folder: AF_UNIX paths are limited to 108 bytes, pytest's tmp_path can be longer."""
    with tempfile.TemporaryDirectory(dir="/tmp") as name:
        yield Path(name)


def receive(listener: socket.socket) -> str:
    listener.settimeout(5)
    return listener.recv(4096).decode("utf-8")


def test_socket_address_forms() -> None:
    assert notify.socket_address("/run/systemd/notify") == "/run/systemd/notify"
    assert notify.socket_address("@/org/freedesktop/systemd1/notify/42") == (
        b"\0/org/freedesktop/systemd1/notify/42"
    )
    assert notify.socket_address("vsock:2:1234") is None  # only a VM host can use these
    assert notify.socket_address("@") is None
    assert notify.socket_address("relative/path") is None


def test_watchdog_interval_is_half_the_timeout_and_only_for_our_pid() -> None:
    assert notify.watchdog_interval({"WATCHDOG_USEC": "60000000"}, pid=10) == 30.0
    assert notify.watchdog_interval({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "10"}, 10) == 0.5
    # Inherited from a parent that is systemd's main process: not ours to ping.
    assert notify.watchdog_interval({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "9"}, 10) is None
    assert notify.watchdog_interval({}, pid=10) is None
    assert notify.watchdog_interval({"WATCHDOG_USEC": "soon"}, pid=10) is None
    assert notify.watchdog_interval({"WATCHDOG_USEC": "0"}, pid=10) is None


def test_take_watchdog_interval_hides_the_variables_from_children() -> None:
    environ = {"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "7", "PATH": "/usr/bin"}
    assert notify.take_watchdog_interval(environ, pid=7) == 1.0
    assert environ == {"PATH": "/usr/bin"}


def test_a_slow_one_gib_upload_is_not_hung_but_a_stuck_status_check_is() -> None:
    upload_limit = notify.step_limit_seconds(size_bytes=GIB, moves_bytes=True)
    # 1 GiB at 2 Mbit/s takes about 70 minutes: still inside the limit.
    assert upload_limit > GIB / (256 * 1024)
    check_limit = notify.step_limit_seconds(size_bytes=GIB, moves_bytes=False)
    assert check_limit == notify.STEP_LIMIT_SECONDS
    assert check_limit < upload_limit


def test_a_hook_timeout_extends_the_limit_of_the_step_that_runs_it() -> None:
    without = notify.step_limit_seconds(size_bytes=0, moves_bytes=False)
    with_hook = notify.step_limit_seconds(size_bytes=0, moves_bytes=False, hook_seconds=600)
    assert with_hook == without + 600


def test_step_limit_base_override() -> None:
    assert notify.step_limit_base({}) == notify.STEP_LIMIT_SECONDS
    assert notify.step_limit_base({notify.STEP_LIMIT_VARIABLE: "1.5"}) == 1.5
    assert notify.step_limit_base({notify.STEP_LIMIT_VARIABLE: "-3"}) == notify.STEP_LIMIT_SECONDS
    assert notify.step_limit_base({notify.STEP_LIMIT_VARIABLE: "x"}) == notify.STEP_LIMIT_SECONDS


def test_status_text() -> None:
    assert notify.status_text(folders=2, settling=3, in_progress=5, done=120, failed=1) == (
        "watching 2 folder(s); 3 settling, 5 in progress, 120 done, 1 failed"
    )


def test_a_value_cannot_forge_another_field() -> None:
    assert notify.message(STATUS="a\nREADY=1") == b"STATUS=a READY=1"
    assert notify.message(READY=1, STATUS="ok") == b"READY=1\nSTATUS=ok"


def test_messages_reach_a_path_socket(short_dir: Path) -> None:
    path = short_dir / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(str(path))
        environ = {"NOTIFY_SOCKET": str(path), "HOME": "/root"}
        notifier = notify.Notifier.from_environment(environ)
        assert environ == {"HOME": "/root"}  # a hook we start must not inherit it
        try:
            assert notifier.enabled
            assert notifier.ready("watching 1 folder(s)")
            assert receive(listener) == "READY=1\nSTATUS=watching 1 folder(s)"
            assert notifier.watchdog()
            assert receive(listener) == "WATCHDOG=1"
            assert notifier.reloading(123456)
            assert receive(listener) == "RELOADING=1\nMONOTONIC_USEC=123456"
            assert notifier.stopping("stopping: 0 step(s) in flight")
            assert receive(listener) == "STOPPING=1\nSTATUS=stopping: 0 step(s) in flight"
        finally:
            notifier.close()


def test_messages_reach_an_abstract_socket() -> None:
    name = "speechkit-watch-test-" + secrets.token_hex(6)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(b"\0" + name.encode())
        notifier = notify.Notifier.from_environment({"NOTIFY_SOCKET": "@" + name})
        try:
            assert notifier.status("watching 3 folder(s)")
            assert receive(listener) == "STATUS=watching 3 folder(s)"
        finally:
            notifier.close()


def test_without_notify_socket_nothing_is_sent() -> None:
    notifier = notify.Notifier.from_environment({})
    assert not notifier.enabled
    assert notifier.ready("x") is False
    assert notifier.watchdog() is False
    notifier.close()


def test_a_vanished_socket_does_not_stop_the_daemon(
    short_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = notify.Notifier(str(short_dir / "gone"))
    try:
        assert notifier.watchdog() is False
        assert notifier.watchdog() is False
    finally:
        notifier.close()
    warnings = [record for record in caplog.records if "cannot notify systemd" in record.message]
    assert len(warnings) == 1  # once, not once per ping


def test_a_service_manager_that_does_not_read_never_blocks_the_daemon() -> None:
    name = "speechkit-watch-test-" + secrets.token_hex(6)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(b"\0" + name.encode())
        notifier = notify.Notifier(b"\0" + name.encode())
        try:
            # The kernel queues only a few datagrams (net.unix.max_dgram_qlen, 10 by default);
            # a blocking send would hang here once the queue is full.
            sent = [notifier.watchdog() for _ in range(200)]
        finally:
            notifier.close()
    assert sent[0] is True
    assert sent[-1] is False  # dropped, not waited for
