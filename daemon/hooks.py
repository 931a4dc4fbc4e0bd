"""The `on_complete` hook: a program run after each file ends, with the file's facts in its
environment. No shell; a timeout; its output goes to the log; it never changes the file's result.
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from daemon.config import Hook
from daemon.logs import shown

log = logging.getLogger(__name__)

MAX_LOGGED_OUTPUT = 4000  # characters of hook output kept in the log


@dataclass(frozen=True)
class Ending:
    """How a file ended, as the hook sees it (paths are empty strings when absent)."""

    audio: str
    result: str  # "done" or "failed"
    txt: str = ""
    json: str = ""
    error: str = ""


def environment(ending: Ending, base: Mapping[str, str], secrets: Iterable[str]) -> dict[str, str]:
    """The hook's environment: ours without any variable that holds a secret, plus the facts."""
    hidden = set(secrets)
    env = {name: value for name, value in base.items() if value not in hidden}
    env.update(
        SPEECHKIT_WATCH_AUDIO=ending.audio,
        SPEECHKIT_WATCH_RESULT=ending.result,
        SPEECHKIT_WATCH_TXT=ending.txt,
        SPEECHKIT_WATCH_JSON=ending.json,
        SPEECHKIT_WATCH_ERROR=ending.error,
    )
    return env


def run(hook: Hook, ending: Ending, secrets: Iterable[str]) -> bool:
    """Run the hook once; True if it exited 0. Every outcome is logged, none is raised."""
    env = environment(ending, os.environ, secrets)
    try:
        completed = subprocess.run(  # noqa: S603 - argv from the operator's config, no shell
            list(hook.command),
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=hook.timeout_seconds,
            check=False,
        )
    except subprocess.TimeoutExpired:
        log.warning(
            "on_complete for %s was stopped after %.0f s", shown(ending.audio), hook.timeout_seconds
        )
        return False
    except OSError as error:
        log.warning("on_complete for %s could not start: %s", shown(ending.audio), error.strerror)
        return False
    output = (completed.stdout + completed.stderr).decode("utf-8", errors="replace").strip()
    if len(output) > MAX_LOGGED_OUTPUT:
        output = output[:MAX_LOGGED_OUTPUT] + " [...]"
    level = logging.INFO if completed.returncode == 0 else logging.WARNING
    log.log(
        level,
        "on_complete for %s exited %d%s",
        shown(ending.audio),
        completed.returncode,
        f"; output: {output}" if output else "",
    )
    return completed.returncode == 0
