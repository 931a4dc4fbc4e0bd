"""Running `speechkit-watch` as a real subprocess and waiting for what a user would see."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Self

WAIT_SECONDS = 60.0  # generous: CI machines are shared and slow; a pass is usually ~2 s
POLL_SECONDS = 0.05
STOP_SECONDS = 15.0
STATUS_POLL_SECONDS = 0.3  # each look runs `speechkit-watch status`, a process of its own


def command() -> list[str]:
    """The installed console script when present (what users run), else `python -m daemon`."""
    script = Path(sys.executable).parent / "speechkit-watch"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "daemon"]


def wait_for(
    predicate: Callable[[], Any],
    what: str,
    timeout: float = WAIT_SECONDS,
    poll: float = POLL_SECONDS,
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(poll)


class Daemon:
    """`speechkit-watch run -c CONFIG` in a subprocess, its stderr kept in a log file."""

    def __init__(self, config: Path, env: Mapping[str, str], log_path: Path) -> None:
        self.config = config
        self.env = {**os.environ, **env}
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.log_offset = 0

    def start(self, extra_env: Mapping[str, str] | None = None) -> Self:
        env = {**self.env, **(extra_env or {})}
        self.log_offset = len(self.log())
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [*command(), "run", "-c", str(self.config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
            )
        wait_for(
            lambda: "started:" in self.log()[self.log_offset :] or self.process_exited(),
            "the daemon to start",
        )
        return self

    def process_exited(self) -> bool:
        return self.process is not None and self.process.poll() is not None

    def log(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def send(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def stop(self, signum: int = signal.SIGTERM, timeout: float = STOP_SECONDS) -> int:
        """Send a signal and wait; the exit code."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signum)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(
                f"the daemon did not stop within {timeout} s:\n{self.log()}"
            ) from None

    def kill(self) -> None:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()

    def cli(self, *arguments: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*command(), *arguments, "-c", str(self.config)],
            env=self.env,
            capture_output=True,
            text=True,
            check=check,
            timeout=60,
        )

    def status(self) -> dict[str, Any]:
        result = self.cli("status", "--json")
        document: dict[str, Any] = json.loads(result.stdout)
        return document

    def wait_for_count(self, state: str, count: int) -> dict[str, Any]:
        """`status --json` once `state` holds `count` files (outputs land just before DONE)."""
        found: dict[str, Any] = {}

        def reached() -> bool:
            found.update(self.status())
            return bool(found["counts"][state] == count)

        wait_for(reached, f"{count} file(s) in state {state}", poll=STATUS_POLL_SECONDS)
        return found

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.kill()


def leftovers(folder: Path, patterns: Sequence[str] = (".*skw-tmp", "*.tmp")) -> list[Path]:
    """Temp files left in a folder tree."""
    return [path for pattern in patterns for path in folder.rglob(pattern)]
