"""The daemon under systemd's eyes: the notify protocol, the watchdog and SIGHUP reloads.

The test plays the service manager: it binds the datagram socket `NOTIFY_SOCKET` names (an
abstract one, as systemd's own is) and sets `WATCHDOG_USEC`, then reads what the real daemon
sends. Reloads rewrite the real config file and send a real SIGHUP.
"""

from __future__ import annotations

import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from daemon import notify, service
from tests.e2e.harness import Daemon, command, wait_for
from tests.fixtures_audio import fixture_path

MONO_TXT = "hello from the watch folder\nthis is a test recording\n"
WATCHDOG_USEC = 200_000  # pings every 0.1 s: many of them within a short test
PINGS_TO_SEE = 3
QUIET_SECONDS = 1.0  # ten ping intervals: silence this long means the pings stopped
BACKLOG_FILES = 500
READ_TIMEOUT_SECONDS = 0.1  # how quickly the reader thread notices it should stop
NO_MDWE_EXIT = 77  # the wrapper's exit code when the kernel has no PR_SET_MDWE (before 6.3)
# Runs argv[1:] with the kernel's MemoryDenyWriteExecute (PR_SET_MDWE = 65,
# PR_MDWE_REFUSE_EXEC_GAIN = 1): inherited across execve, stricter than systemd's filter.
MDWE_WRAPPER = f"""
import ctypes, os, sys
if ctypes.CDLL(None, use_errno=True).prctl(65, 1, 0, 0, 0) != 0:
    sys.exit({NO_MDWE_EXIT})
os.execv(sys.argv[1], sys.argv[1:])
"""

Message = dict[str, str]


class NotifySocket:
    """The socket the service manager listens on; a thread reads it at once, as systemd does
    (unread, the kernel queues only about ten datagrams)."""

    def __init__(self) -> None:
        self.name = "speechkit-watch-test-" + secrets.token_hex(8)
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.socket.bind(b"\0" + self.name.encode())
        self.socket.settimeout(READ_TIMEOUT_SECONDS)
        self.messages: list[Message] = []
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._reader = threading.Thread(target=self._read, name="notify-reader")
        self._reader.start()

    @property
    def env(self) -> dict[str, str]:
        return {notify.SOCKET_VARIABLE: "@" + self.name}

    def _read(self) -> None:
        while not self._closing.is_set():
            try:
                datagram = self.socket.recv(4096)
            except TimeoutError:
                continue
            fields = (line.partition("=") for line in datagram.decode().splitlines())
            with self._lock:
                self.messages.append({key: value for key, _, value in fields})

    def collect(self) -> list[Message]:
        """Every message so far, in order."""
        with self._lock:
            return list(self.messages)

    def wait_for(self, predicate: Callable[[list[Message]], bool], what: str) -> list[Message]:
        wait_for(lambda: predicate(self.collect()), what)
        return self.collect()

    def count(self, key: str) -> int:
        return sum(key in message for message in self.collect())

    def statuses(self) -> list[str]:
        return [message["STATUS"] for message in self.collect() if "STATUS" in message]

    def close(self) -> None:
        self._closing.set()
        self._reader.join()
        self.socket.close()


@pytest.fixture
def notify_socket() -> Iterator[NotifySocket]:
    listener = NotifySocket()
    try:
        yield listener
    finally:
        listener.close()


def has(key: str) -> Callable[[list[Message]], bool]:
    return lambda messages: any(key in message for message in messages)


def rewrite_config(daemon: Daemon, change: Callable[[dict[str, object]], None]) -> None:
    document = yaml.safe_load(daemon.config.read_text(encoding="utf-8"))
    change(document)
    daemon.config.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")


def test_ready_status_regular_pings_and_stopping(
    make_daemon: Callable[..., Daemon], inbox: Path, notify_socket: NotifySocket
) -> None:
    daemon = make_daemon(env={**notify_socket.env, "WATCHDOG_USEC": str(WATCHDOG_USEC)})
    with daemon.start():
        messages = notify_socket.wait_for(has("READY"), "READY=1")
        ready = next(message for message in messages if "READY" in message)
        assert ready["READY"] == "1"
        assert ready["STATUS"] == (
            "watching 1 folder(s); 0 settling, 0 in progress, 0 done, 0 failed"
        )
        shutil.copy(fixture_path("mono.ogg"), inbox / "call.ogg")
        wait_for((inbox / "call.txt").exists, "call.txt")
        assert (inbox / "call.txt").read_text(encoding="utf-8") == MONO_TXT
        wait_for(
            lambda: any("1 done, 0 failed" in status for status in notify_socket.statuses()),
            "a status line counting the finished file",
        )
        # Pings keep coming while the daemon works and after.
        pings = notify_socket.count("WATCHDOG")
        wait_for(
            lambda: notify_socket.count("WATCHDOG") >= pings + PINGS_TO_SEE, "more watchdog pings"
        )
        assert all(message.get("WATCHDOG", "1") == "1" for message in notify_socket.collect())
        assert daemon.stop() == 0
    messages = notify_socket.wait_for(has("STOPPING"), "STOPPING=1")  # the reader may lag
    assert messages[-1]["STOPPING"] == "1"  # the last word, and nothing after it
    assert messages[-1]["STATUS"].startswith("stopping")
    assert sum("READY" in message for message in messages) == 1


def test_ready_comes_before_a_backlog_of_hundreds_of_files_is_worked(
    make_daemon: Callable[..., Daemon], inbox: Path, notify_socket: NotifySocket
) -> None:
    audio = fixture_path("mono.ogg").read_bytes()
    for number in range(BACKLOG_FILES):
        (inbox / f"backlog-{number:03d}.ogg").write_bytes(audio)
    daemon = make_daemon(env=notify_socket.env)
    with daemon.start():
        notify_socket.wait_for(has("READY"), "READY=1")
        # Had the daemon worked through the backlog first, every transcript would be there.
        assert len(list(inbox.glob("*.txt"))) < BACKLOG_FILES
        # The start-up scan follows READY at once: the next status line counts every file.
        wait_for(
            lambda: any(
                f"{BACKLOG_FILES} settling" in status for status in notify_socket.statuses()
            ),
            "a status line with the whole backlog settling",
        )
        assert daemon.stop() == 0
    notify_socket.wait_for(has("STOPPING"), "STOPPING=1")


def test_a_hung_step_stops_the_watchdog_pings(
    make_daemon: Callable[..., Daemon], inbox: Path, notify_socket: NotifySocket
) -> None:
    daemon = make_daemon(
        env={
            **notify_socket.env,
            "WATCHDOG_USEC": str(WATCHDOG_USEC),
            service.HANG_VARIABLE: "step",  # every step blocks forever
            notify.STEP_LIMIT_VARIABLE: "1",  # and counts as hung after a second
        }
    )
    with daemon.start():
        # Healthy while no step runs.
        wait_for(lambda: notify_socket.count("WATCHDOG") >= PINGS_TO_SEE, "watchdog pings")
        shutil.copy(fixture_path("mono.ogg"), inbox / "stuck.ogg")
        wait_for(lambda: "looks hung" in daemon.log(), "the hung step to be reported")
        hung_line = next(line for line in daemon.log().splitlines() if "looks hung" in line)
        assert f'"{inbox / "stuck.ogg"}"' in hung_line  # which file, so one can look at it
        time.sleep(READ_TIMEOUT_SECONDS * 3)  # a ping sent just before is read by now
        seen = len(notify_socket.collect())
        time.sleep(QUIET_SECONDS)
        later = notify_socket.collect()[seen:]
        assert not has("WATCHDOG")(later), later
        assert not daemon.process_exited()  # systemd's watchdog, not the daemon, ends it
        daemon.kill()


def test_sighup_applies_a_good_config_to_new_files(
    make_daemon: Callable[..., Daemon],
    inbox: Path,
    tmp_path: Path,
    notify_socket: NotifySocket,
) -> None:
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(fixture_path("mono.ogg"), other / "waiting.ogg")  # there before the reload
    daemon = make_daemon(env=notify_socket.env)
    with daemon.start():
        notify_socket.wait_for(has("READY"), "READY=1")

        def swap_folders(document: dict[str, object]) -> None:
            document["watch"] = [{"path": str(other)}]  # inbox released, other watched
            document["outputs"] = ["txt"]  # a new setting, for new files

        rewrite_config(daemon, swap_folders)
        daemon.send(signal.SIGHUP)
        wait_for(lambda: "reloaded the config" in daemon.log(), "the reload")
        assert "(1 added, 1 removed)" in daemon.log()
        messages = notify_socket.wait_for(
            lambda found: sum("READY" in message for message in found) == 2, "READY after reload"
        )
        reloading = next(index for index, found in enumerate(messages) if "RELOADING" in found)
        assert "READY" in messages[reloading + 1]  # RELOADING=1, then READY=1 once applied
        assert "MONOTONIC_USEC" in messages[reloading]

        shutil.copy(fixture_path("stereo.ogg"), inbox / "ignored.ogg")  # no longer watched
        shutil.copy(fixture_path("mono.ogg"), other / "dropped.ogg")
        for name in ("waiting", "dropped"):
            wait_for((other / f"{name}.txt").exists, f"{name}.txt")
            assert (other / f"{name}.txt").read_text(encoding="utf-8") == MONO_TXT
            assert not (other / f"{name}.json").exists()  # the reloaded outputs: txt only
        # ignored.ogg was dropped first: had inbox still been watched, it would be known now.
        status = daemon.status()
        assert sum(status["counts"].values()) == 2
        assert not (inbox / "ignored.txt").exists()
        assert "Traceback" not in daemon.log()
        assert daemon.stop() == 0


def test_sighup_with_a_broken_config_keeps_the_running_one(
    make_daemon: Callable[..., Daemon], inbox: Path, notify_socket: NotifySocket
) -> None:
    daemon = make_daemon(env=notify_socket.env)
    with daemon.start():
        notify_socket.wait_for(has("READY"), "READY=1")

        def break_it(document: dict[str, object]) -> None:
            document["settle_seconds"] = "soon"
            document["colour"] = "blue"

        rewrite_config(daemon, break_it)
        daemon.send(signal.SIGHUP)
        wait_for(
            lambda: "still running on the previous config" in daemon.log(), "the refused reload"
        )
        log = daemon.log()
        # Every problem on a line of its own, naming the file and the key.
        assert f"reload refused: {daemon.config}: at 'settle_seconds'" in log
        assert f"reload refused: {daemon.config}: at 'colour': unknown key" in log
        wait_for(
            lambda: any("last reload failed" in status for status in notify_socket.statuses()),
            "the status line to mention the failed reload",
        )
        shutil.copy(fixture_path("mono.ogg"), inbox / "after.ogg")
        # Both outputs: still the old `outputs` setting.
        wait_for(
            lambda: (inbox / "after.txt").exists() and (inbox / "after.json").exists(),
            "after.txt and after.json",
        )
        assert (inbox / "after.txt").read_text(encoding="utf-8") == MONO_TXT
        assert not daemon.process_exited()
        assert daemon.stop() == 0


def test_the_daemon_needs_no_writable_executable_memory(
    make_daemon: Callable[..., Daemon], inbox: Path, tmp_path: Path
) -> None:
    """The unit sets MemoryDenyWriteExecute=yes: a dependency needing a JIT would break it."""
    daemon = make_daemon()
    log_path = tmp_path / "mdwe.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-c", MDWE_WRAPPER, *command(), "run", "-c", str(daemon.config)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=daemon.env,
        )  # fmt: skip
    try:
        wait_for(
            lambda: process.poll() is not None or "started:" in log_path.read_text(),
            "the daemon to start",
        )
        if process.returncode == NO_MDWE_EXIT:
            pytest.skip("this kernel has no PR_SET_MDWE (Linux 6.3 or later)")
        assert process.poll() is None, log_path.read_text()
        shutil.copy(fixture_path("stereo.ogg"), inbox / "call.ogg")
        outputs = (inbox / "call.txt", inbox / "call.json")
        wait_for(
            lambda: all(path.exists() for path in outputs) or process.poll() is not None,
            "call.txt and call.json",
        )
        assert process.poll() is None, log_path.read_text()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
    assert "Traceback" not in log_path.read_text()
