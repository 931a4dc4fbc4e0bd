"""The kernel's inotify limits against what the watched folders need.

inotify takes one watch per folder (every subfolder of a recursive watch folder too) from the
user's `fs.inotify.max_user_watches`, and one instance per observer (one per watch folder) from
`fs.inotify.max_user_instances`. When either runs out, watchdog's watch call fails with ENOSPC or
EMFILE; `watching` then polls that folder instead, and `check` warns before it happens.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable
from pathlib import Path

PROC_SYS = Path("/proc/sys")
WATCHES_SYSCTL = "fs.inotify.max_user_watches"
INSTANCES_SYSCTL = "fs.inotify.max_user_instances"
# Inside a user namespace (a container) its own, possibly lower, limit applies as well.
NAMESPACE_SYSCTLS = {
    WATCHES_SYSCTL: "user.max_inotify_watches",
    INSTANCES_SYSCTL: "user.max_inotify_instances",
}
# The errors of the watch call when a limit is reached, and the sysctl that raises each.
LIMIT_ERRORS = {errno.ENOSPC: WATCHES_SYSCTL, errno.EMFILE: INSTANCES_SYSCTL}
# Other programs of the same user (desktop indexers, IDEs, sync clients) use watches too:
# above this share of the limit, `check` warns.
HEADROOM_SHARE = 0.8


def _read_sysctl(name: str, proc_sys: Path) -> int | None:
    try:
        return int((proc_sys / name.replace(".", "/")).read_text(encoding="ascii").strip())
    except (OSError, ValueError):
        return None


def read_limit(sysctl: str, proc_sys: Path = PROC_SYS) -> int | None:
    """The limit an inotify sysctl sets for this process: the lower of the system's value and
    the user namespace's; None where neither can be read (not Linux)."""
    values = [_read_sysctl(name, proc_sys) for name in (sysctl, NAMESPACE_SYSCTLS[sysctl])]
    found = [value for value in values if value is not None]
    return min(found) if found else None


def count_folders(root: Path, *, recursive: bool) -> int:
    """The watches a watch folder takes: itself, and with `recursive` every folder below it
    (inotify watches hidden ones too). Symlinks are not followed, as watchdog does not."""
    if not recursive:
        return 1
    count = 0
    stack = [str(root)]
    while stack:
        directory = stack.pop()
        count += 1
        try:
            with os.scandir(directory) as entries:
                for entry in entries:
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(entry.path)
                    except OSError:
                        continue
        except OSError:
            continue  # gone or unreadable: inotify cannot watch it either
    return count


def sysctl_advice(sysctl: str, needed: int, limit: int | None) -> str:
    """How to raise a limit for good, with a value that leaves room for other programs."""
    suggested = max(needed * 2, (limit or 0) * 2, 8192)
    return (
        f"raise it with `sysctl -w {sysctl}={suggested}` and keep it in /etc/sysctl.d/ "
        f"(now {limit if limit is not None else 'unknown'}, this config needs {needed})"
    )


def judge(needed: int, limit: int | None) -> str:
    """ "ok", "near" (above HEADROOM_SHARE of the limit), "over" or "unknown"."""
    if limit is None:
        return "unknown"
    if needed > limit:
        return "over"
    if needed > limit * HEADROOM_SHARE:
        return "near"
    return "ok"


def needed_watches(folders: Iterable[tuple[Path, bool]]) -> int:
    """Watches for (path, recursive) folders watched with inotify (missing ones count 0)."""
    return sum(
        count_folders(path, recursive=recursive) for path, recursive in folders if path.is_dir()
    )
