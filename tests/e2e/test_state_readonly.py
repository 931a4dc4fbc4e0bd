"""A state file the daemon cannot write stops the start: one line naming it and why, exit 2,
before READY (no traceback after it, no restart loop under systemd), and `check` says PROBLEM.

Root (CI) writes files whatever their mode, so the state lives on read-only mounts: a small tmpfs
remounted read-only, and bind mounts of single files (tests/mounts.py; skipped where mounting is
not permitted).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.harness import Daemon, command
from tests.fixtures_audio import fixture_path
from tests.mounts import mounted

EXIT_SECONDS = 20.0  # a refused start takes about a second


def state_file(tmp_path: Path) -> Path:
    return tmp_path / "state" / "state.db"  # where make_daemon puts it


def create_state(daemon: Daemon) -> None:
    with daemon.start():
        assert daemon.stop() == 0


def refused_start(daemon: Daemon, path: Path, reason: str) -> None:
    """`run` exits 2 at once with one line naming the state file and `reason`."""
    try:
        result = subprocess.run(
            [*command(), "run", "-c", str(daemon.config)], env=daemon.env,
            capture_output=True, text=True, timeout=EXIT_SECONDS, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired as error:
        raise AssertionError(
            f"the daemon started on a state file it cannot write:\n{error.stderr!r}"
        ) from None
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "started:" not in result.stderr  # READY comes after this line
    problems = [line for line in result.stderr.splitlines() if "cannot start" in line]
    assert len(problems) == 1, result.stderr
    assert str(path) in problems[0]
    assert reason in problems[0], problems[0]


def check_says_problem(daemon: Daemon, path: Path) -> None:
    """`check` has a PROBLEM line about the state file (or its folder, where that is the cause)."""
    result = daemon.cli("check", check=False)
    assert result.returncode == 1, result.stdout
    assert any(
        line.startswith("PROBLEM") and "state file" in line and str(path.parent) in line
        for line in result.stdout.splitlines()
    ), result.stdout


@pytest.fixture
def inbox_with_a_file(inbox: Path) -> Path:
    """Something to record at once: a daemon that started anyway writes (and fails) soon."""
    shutil.copy(fixture_path("mono.ogg"), inbox / "memo.ogg")
    return inbox


def test_a_state_file_system_mounted_read_only_stops_the_start(
    make_daemon: Callable[..., Daemon], inbox_with_a_file: Path, tmp_path: Path
) -> None:
    path = state_file(tmp_path)
    with mounted() as mounts:
        mounts.tmpfs(path.parent)
        daemon = make_daemon()
        create_state(daemon)
        mounts.read_only(path.parent)
        refused_start(daemon, path, "Read-only file system")
        check_says_problem(daemon, path)


def test_a_read_only_state_file_stops_the_start_before_ready(
    make_daemon: Callable[..., Daemon], inbox_with_a_file: Path, tmp_path: Path
) -> None:
    path = state_file(tmp_path)
    daemon = make_daemon()
    create_state(daemon)
    with mounted() as mounts:
        mounts.bind(path, path, read_only=True)  # the folder stays writable
        refused_start(daemon, path, "cannot write the state file: it is on a read-only mount")
        check_says_problem(daemon, path)


def test_a_writable_state_file_in_a_read_only_folder_stops_the_start(
    make_daemon: Callable[..., Daemon], inbox_with_a_file: Path, tmp_path: Path
) -> None:
    path = state_file(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with mounted() as mounts:
        mounts.tmpfs(path.parent)
        daemon = make_daemon()
        create_state(daemon)
        lock = path.with_name(path.name + ".daemon-lock")
        for file in (path, lock):  # both writable, from elsewhere; their folder is not
            shutil.copy(file, elsewhere / file.name)
            mounts.bind(elsewhere / file.name, file)
        mounts.read_only(path.parent)
        refused_start(
            daemon, path, f"its folder {path.parent} is on a read-only mount, and SQLite keeps"
        )
        check_says_problem(daemon, path)
