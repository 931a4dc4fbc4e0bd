"""Read-only file systems for tests: a small tmpfs and bind mounts, always unmounted afterwards.

File modes do not stop root (CI runs as root), a read-only mount does. Mounting needs root (or a
user and mount namespace); where it is not permitted the test is skipped with a message.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

MOUNT_TIMEOUT_SECONDS = 30


def _run(*arguments: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            list(arguments), capture_output=True, text=True, check=False,
            timeout=MOUNT_TIMEOUT_SECONDS,
        )  # fmt: skip
    except FileNotFoundError:
        return subprocess.CompletedProcess(list(arguments), 127, "", f"{arguments[0]}: not found")


class Mounts:
    """Mounts made by one test, undone in reverse order by `mounted()`."""

    def __init__(self) -> None:
        self.made: list[Path] = []

    def _mount(self, target: Path, *arguments: str) -> None:
        result = _run("mount", *arguments, str(target))
        if result.returncode != 0:
            pytest.skip(
                "cannot mount here (needs root, or a user and mount namespace): "
                + (result.stderr.strip() or f"mount exited {result.returncode}")
            )
        self.made.append(target)

    def tmpfs(self, folder: Path, size: str = "4m") -> Path:
        """A small, empty tmpfs on `folder` (created if missing)."""
        folder.mkdir(parents=True, exist_ok=True)
        self._mount(folder, "-t", "tmpfs", "-o", f"size={size}", "tmpfs")
        return folder

    def bind(self, source: Path, target: Path, *, read_only: bool = False) -> None:
        """`source` also appears at `target` (an existing file or folder); read-only there."""
        self._mount(target, "--bind", str(source))
        if read_only:
            self.read_only(target, bind=True)

    def read_only(self, target: Path, *, bind: bool = False) -> None:
        """Make a mount made here read-only (what is open for writing on it must be closed)."""
        options = "remount,bind,ro" if bind else "remount,ro"
        result = _run("mount", "-o", options, str(target))
        if result.returncode != 0:
            raise AssertionError(f"cannot remount {target} read-only: {result.stderr.strip()}")

    def undo(self) -> None:
        problems = []
        while self.made:
            target = self.made.pop()
            if _run("umount", str(target)).returncode != 0:
                result = _run("umount", "-l", str(target))  # lazily: nothing may stay mounted
                if result.returncode != 0:
                    problems.append(f"{target}: {result.stderr.strip()}")
        if problems:
            raise AssertionError("could not unmount " + "; ".join(problems))


@contextlib.contextmanager
def mounted() -> Iterator[Mounts]:
    mounts = Mounts()
    try:
        yield mounts
    finally:
        mounts.undo()
