"""One whisper-engine server for the whole test session, shared by every xdist worker.

Loading Whisper takes seconds and hundreds of MB, so the first worker that needs the server
starts it under a file lock in the session's shared temporary folder (the controller's
basetemp: each worker's basetemp is a folder inside it); the others find its port there. The
server runs detached (its parent exits at once), so no worker owns it as a child; the session's
last step, `stop_shared_whisper_server` from pytest_sessionfinish in the controller, stops it.
`timeout` bounds its life in case the session dies before that.

It reads audio by plain GET only (no storage keys): tests hand it presigned links to their own
worker's SeaweedFS.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from speechkit_local import devstack

DIRECTORY_NAME = "whisper-server"
LIFETIME_LIMIT_SECONDS = 900  # a whole `make test` takes ~6 min; an orphan dies after this
# Loading the model is ~3 s on an idle machine; the first run also joins its two parts.
READY_TIMEOUT_SECONDS = 90.0
STOP_TIMEOUT_SECONDS = 10.0
POLL_SECONDS = 0.05
PROJECT_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class SharedServer:
    url: str
    api_key: str
    log_path: Path

    @property
    def recognize_url(self) -> str:
        return self.url + devstack.RECOGNIZE_PATH

    @property
    def operations_url(self) -> str:
        return self.url + devstack.OPERATIONS_PATH


def shared_directory(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's folder every worker sees (the controller's basetemp)."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent
    return base / DIRECTORY_NAME


def _launch(directory: Path, api_key: str) -> None:
    command = [
        "timeout",
        str(LIFETIME_LIMIT_SECONDS),
        sys.executable,
        "-m",
        devstack.LOCAL_SERVER_MODULE,
        "--engine",
        "whisper",
        "--port",
        "0",
        "--port-file",
        str(directory / "port"),
    ]
    environ = {**os.environ, "SPEECHKIT_LOCAL_API_KEYS": api_key}
    environ = {key: value for key, value in environ.items() if not key.startswith("AWS_")}
    # `sh` starts it in the background, writes its pid and exits: the server is nobody's child.
    script = '"$@" >"$LOG" 2>&1 </dev/null & echo $! >"$PIDFILE"'
    subprocess.run(
        ["sh", "-c", script, "sh", *command],
        env={**environ, "LOG": str(directory / "server.log"), "PIDFILE": str(directory / "pid")},
        cwd=PROJECT_ROOT,
        check=True,
        start_new_session=True,
    )


def _wait_for_port(directory: Path) -> int:
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    pid = int((directory / "pid").read_text(encoding="ascii"))
    while time.monotonic() < deadline:
        with contextlib.suppress(FileNotFoundError, ValueError):
            return int((directory / "port").read_text(encoding="ascii"))
        if not Path(f"/proc/{pid}").exists():
            break
        time.sleep(POLL_SECONDS)
    log = devstack.log_tail(directory / "server.log")
    (directory / "failed").write_text(log, encoding="utf-8")
    raise RuntimeError(f"the whisper server did not start; its log ends:\n{log}")


def shared_whisper_server(directory: Path) -> SharedServer:
    """The session's whisper server, started by whichever worker asks first."""
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / "lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        failed = directory / "failed"
        if failed.exists():
            pytest.fail("the whisper server failed to start:\n" + failed.read_text("utf-8"))
        key_file = directory / "api-key"
        if not key_file.exists():
            api_key = "whisper-test-" + secrets.token_hex(8)
            key_file.write_text(api_key, encoding="ascii")
            _launch(directory, api_key)
        port = _wait_for_port(directory)
        api_key = key_file.read_text(encoding="ascii")
    return SharedServer(f"http://{devstack.LOOPBACK}:{port}", api_key, directory / "server.log")


def stop_shared_whisper_server(directory: Path) -> None:
    """SIGTERM (timeout passes it on to the server), then SIGKILL if it lingers."""
    with contextlib.suppress(FileNotFoundError, ValueError):
        pid = int((directory / "pid").read_text(encoding="ascii"))
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
            while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)
                time.sleep(POLL_SECONDS)
            if Path(f"/proc/{pid}").exists():
                os.kill(pid, signal.SIGKILL)
