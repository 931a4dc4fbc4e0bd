"""Shared fixtures: one real SeaweedFS per session, a fresh bucket per test, the local SpeechKit
server per test, and a guard that fails any test which leaks a thread or a child process.

`speechkit_local` is imported inside its fixture, so this file loads even where that
package is missing or broken and only the tests that need it fail.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from speechkit_local import devstack
from tests import whisper_server as whisper_server_module

if TYPE_CHECKING:
    from speechkit_local import LocalSpeechKit

# The guard runs `pytester` sessions of its own in a subprocess to prove it fails leaky tests.
pytest_plugins = ("pytester",)

FAULT_SEED = 20261125  # fault draws repeat from run to run: a failing test fails again
TEST_SECONDS_PER_MINUTE = 0.5  # the echo engine finishes a 10 s clip in ~0.1 s: tests stay fast
# Owners join their threads and reap their children before teardown ends; the grace only
# covers a thread or process that is already on its way out.
LEAK_GRACE_SECONDS = 1.0
LEAK_POLL_SECONDS = 0.05
PROC = Path("/proc")

# Session servers whose processes the leak guard must not count (their pid changes on restart).
_session_storage: list[devstack.SeaweedFS] = []


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[devstack.SeaweedFS]:
    """One SeaweedFS for the whole session; tests take their own bucket from `bucket`."""
    storage = devstack.SeaweedFS(tmp_path_factory.mktemp("seaweedfs"))
    with storage:
        _session_storage.append(storage)
        try:
            yield storage
        finally:
            _session_storage.remove(storage)


@pytest.fixture
def bucket(seaweedfs: devstack.SeaweedFS) -> Iterator[str]:
    """A fresh, empty bucket on the session SeaweedFS, emptied and deleted after the test."""
    name = seaweedfs.create_bucket("test-" + secrets.token_hex(6))
    try:
        yield name
    finally:
        seaweedfs.delete_bucket(name)


@pytest.fixture
def api_key() -> str:
    """A random API key the local SpeechKit server accepts (random, so none is hard-coded)."""
    return "test-api-key-" + secrets.token_hex(8)


@pytest.fixture
def speechkit(seaweedfs: devstack.SeaweedFS, api_key: str) -> Iterator[LocalSpeechKit]:
    """The local SpeechKit server in-process, reading audio from the session SeaweedFS."""
    from speechkit_local import LocalSpeechKit, ServerSettings  # noqa: PLC0415 - see docstring

    settings = ServerSettings(
        api_keys=(api_key,),
        seconds_per_minute=TEST_SECONDS_PER_MINUTE,
        storage_endpoint=seaweedfs.endpoint_url,
        storage_access_key_id=seaweedfs.access_key_id,
        storage_secret_access_key=seaweedfs.secret_access_key,
        storage_region=seaweedfs.region,
        seed=FAULT_SEED,
    )
    with LocalSpeechKit(settings) as server:
        yield server


@dataclass(frozen=True)
class ChildProcess:
    pid: int
    state: str  # one letter from /proc/PID/stat: R, S, D, Z (zombie: exited, never reaped), ...
    command: str


def child_processes(parent: int | None = None) -> dict[int, ChildProcess]:
    """Direct children of `parent` (default: this process), zombies included."""
    parent_pid = os.getpid() if parent is None else parent
    children: dict[int, ChildProcess] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text(encoding="utf-8", errors="replace")
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # exited while we looked
        # "pid (comm) state ppid ...": comm may hold spaces and ')', so split at the last ')'.
        name_end = stat.rfind(")")
        fields = stat[name_end + 2 :].split()
        if len(fields) < 2 or int(fields[1]) != parent_pid:
            continue
        label = command.strip() or stat[stat.find("(") + 1 : name_end]
        children[int(entry.name)] = ChildProcess(int(entry.name), fields[0], label)
    return children


def _session_pids() -> set[int]:
    return {storage.pid for storage in _session_storage if storage.pid is not None}


def _leaks(
    threads_before: set[threading.Thread], children_before: set[int]
) -> tuple[list[threading.Thread], list[ChildProcess]]:
    threads = [
        thread
        for thread in threading.enumerate()
        if thread not in threads_before and not thread.daemon and thread.is_alive()
    ]
    allowed = children_before | _session_pids()
    children = [child for pid, child in child_processes().items() if pid not in allowed]
    return threads, children


@pytest.fixture(autouse=True)
def _no_leaked_threads_or_processes() -> Iterator[None]:
    """Fail the test if it leaves a non-daemon thread running or a child process behind."""
    threads_before = set(threading.enumerate())
    children_before = set(child_processes())
    yield
    deadline = time.monotonic() + LEAK_GRACE_SECONDS
    threads, children = _leaks(threads_before, children_before)
    while (threads or children) and time.monotonic() < deadline:
        time.sleep(LEAK_POLL_SECONDS)
        threads, children = _leaks(threads_before, children_before)
    if not threads and not children:
        return
    problems = [f"leaked thread {thread.name!r}" for thread in threads]
    for child in children:
        kind = "zombie (exited, never reaped)" if child.state == "Z" else "running"
        problems.append(f"leaked child process {child.pid} [{kind}]: {child.command}")
        # Stop it so the tests after this one are not disturbed; the failure is reported anyway.
        _kill_and_reap(child.pid)
    pytest.fail("test leaked resources:\n  " + "\n  ".join(problems), pytrace=False)


def _kill_and_reap(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):  # a Popen object in the test reaped it first
        os.waitpid(pid, 0)


@pytest.fixture
def whisper_server(tmp_path_factory: pytest.TempPathFactory) -> whisper_server_module.SharedServer:
    """The session's one whisper-engine server (the model loads once for all workers)."""
    return whisper_server_module.shared_whisper_server(
        whisper_server_module.shared_directory(tmp_path_factory)
    )


def pytest_sessionfinish(session: pytest.Session) -> None:
    """The controller (or a run without xdist) stops the shared whisper server, if one started."""
    if hasattr(session.config, "workerinput"):
        return
    factory: pytest.TempPathFactory | None = getattr(session.config, "_tmp_path_factory", None)
    if factory is not None:
        whisper_server_module.stop_shared_whisper_server(
            factory.getbasetemp() / whisper_server_module.DIRECTORY_NAME
        )
