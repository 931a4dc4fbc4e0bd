"""End-to-end fixtures: an inbox, a config pointing at the real SeaweedFS and local server."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from speechkit_local import LocalSpeechKit, devstack
from tests.e2e.harness import Daemon

pytestmark = pytest.mark.e2e

SETTLE_SECONDS = 0.5  # short, so tests are quick; slow-writer tests pause longer than this


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    folder = tmp_path / "inbox"
    folder.mkdir()
    return folder


@pytest.fixture
def make_daemon(
    tmp_path: Path,
    inbox: Path,
    seaweedfs: devstack.SeaweedFS,
    bucket: str,
    speechkit: LocalSpeechKit,
    api_key: str,
) -> Iterator[Callable[..., Daemon]]:
    """Build (not start) a daemon on `inbox`; keyword arguments are merged into the config."""
    made: list[Daemon] = []

    def make(
        *, watch_dirs: list[Path] | None = None, env: dict[str, str] | None = None, **extra: Any
    ) -> Daemon:
        config = devstack.write_daemon_config(
            tmp_path / f"config-{len(made)}.yaml",
            watch_dirs=watch_dirs or [inbox],
            storage=seaweedfs,
            speechkit_url=speechkit.url,
            api_key=api_key,
            state_file=tmp_path / "state" / "state.db",
            settle_seconds=SETTLE_SECONDS,
            bucket=bucket,
            extra=extra,
        )
        daemon = Daemon(
            config,
            {**devstack.daemon_env(seaweedfs, api_key), **(env or {})},
            tmp_path / "daemon.log",
        )
        made.append(daemon)
        return daemon

    yield make
    for daemon in made:
        if daemon.process is not None and daemon.process.poll() is None:
            daemon.kill()
