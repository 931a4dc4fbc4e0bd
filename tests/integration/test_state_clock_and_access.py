"""The state store on real SQLite files: moving the schedule with a wall clock step, and a state
file that cannot be written found at start (read-only mounts, modes)."""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path

import pytest

from daemon import state
from tests.mounts import mounted

HOUR = 3600.0
NOW = 1_800_000_000.0
TOLERANCE = 30.0


def pending_row(store: state.Store, path: str, *, at: float, due_in: float) -> int:
    row_id = store.add_version(path=path, folder="/in", size=10, mtime_ns=1, now=at)
    store.update(row_id, at, state=state.PENDING, operation_id="e03x", submitted_at=at,
                 due_at=at + due_in)  # fmt: skip
    return row_id


def calls(path: Path) -> list[float]:
    db = sqlite3.connect(path)
    try:
        return sorted(at for (at,) in db.execute("SELECT at FROM api_calls"))
    finally:
        db.close()


def test_a_step_moves_unfinished_rows_and_recorded_calls_but_not_finished_ones(
    tmp_path: Path,
) -> None:
    store = state.Store(tmp_path / "state.db")
    pending = pending_row(store, "/in/a.ogg", at=NOW, due_in=10.0)
    done = pending_row(store, "/in/b.ogg", at=NOW, due_in=10.0)
    store.update(done, NOW + 1, state=state.DONE, due_at=None, finished_at=NOW + 1)
    store.record_call("check", NOW - 100.0)
    store.record_call("submit", NOW)
    assert store.shift_times(-HOUR, NOW + 2 - HOUR) == 1
    row = store.get(pending)
    assert (row.due_at, row.submitted_at, row.updated_at) == (
        NOW + 10.0 - HOUR, NOW - HOUR, NOW - HOUR,
    )  # fmt: skip
    assert store.get(done).finished_at == NOW + 1  # history stays as it was
    assert [row.id for row in store.due(NOW + 10.0 - HOUR, limit=5)] == [pending]
    assert calls(tmp_path / "state.db") == [NOW - 100.0 - HOUR, NOW - HOUR]
    store.close()


def test_times_written_by_a_clock_ahead_of_now_are_pulled_in_by_that_much(
    tmp_path: Path,
) -> None:
    store = state.Store(tmp_path / "state.db")
    # Scheduled an hour "ahead" (the clock was set back while the daemon was stopped).
    ahead = pending_row(store, "/in/ahead.ogg", at=NOW + HOUR, due_in=12.0)
    jitter = pending_row(store, "/in/jitter.ogg", at=NOW + TOLERANCE / 2, due_in=12.0)
    store.record_call("submit", NOW + HOUR)
    store.record_call("check", NOW - 5.0)
    assert store.pull_in_future_times(NOW, tolerance=TOLERANCE) == 1
    row = store.get(ahead)
    assert (row.due_at, row.submitted_at, row.updated_at) == (NOW + 12.0, NOW, NOW)
    assert store.get(jitter).due_at == NOW + TOLERANCE / 2 + 12.0  # within the tolerance
    assert calls(tmp_path / "state.db") == [NOW - 5.0, NOW]  # a call cannot lie in the future
    assert store.pull_in_future_times(NOW, tolerance=TOLERANCE) == 0  # once is enough
    store.close()


# -- a state file that cannot be written -------------------------------------------------------


def make_state(path: Path) -> None:
    store = state.Store(path)
    store.add_version(path="/in/a.ogg", folder="/in", size=1, mtime_ns=1, now=NOW)
    store.close()


def refusal(path: Path) -> str:
    with pytest.raises(state.StateFileError) as raised:
        state.Store(path)
    message = str(raised.value)
    assert message.startswith(f"{path}: cannot write the state file: ")
    assert "\n" not in message
    return message


def test_a_state_file_on_a_read_only_file_system_is_refused_at_open(tmp_path: Path) -> None:
    folder = tmp_path / "state"
    with mounted() as mounts:
        mounts.tmpfs(folder)
        make_state(folder / "state.db")
        mounts.read_only(folder)
        assert "read-only mount" in refusal(folder / "state.db")


def test_a_read_only_state_file_in_a_writable_folder_is_refused_at_open(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    make_state(path)
    with mounted() as mounts:
        mounts.bind(path, path, read_only=True)
        assert "read-only mount" in refusal(path)
    assert not (tmp_path / "state.db-wal").exists()


def test_a_writable_state_file_in_a_read_only_folder_is_refused_at_open(tmp_path: Path) -> None:
    folder, elsewhere = tmp_path / "state", tmp_path / "elsewhere"
    elsewhere.mkdir()
    make_state(elsewhere / "state.db")
    with mounted() as mounts:
        mounts.tmpfs(folder)
        shutil.copy(elsewhere / "state.db", folder / "state.db")
        mounts.bind(elsewhere / "state.db", folder / "state.db")  # the file itself: writable
        mounts.read_only(folder)
        assert os.access(folder / "state.db", os.W_OK)
        message = refusal(folder / "state.db")
        assert f"its folder {folder} is on a read-only mount" in message
        assert "state.db-wal" in message


@pytest.mark.skipif(os.geteuid() == 0, reason="file modes do not stop root; see the mount tests")
def test_a_state_file_without_write_permission_is_refused_at_open(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    make_state(path)
    path.chmod(0o444)
    assert "read-only for this user" in refusal(path)
    path.chmod(0o644)
    tmp_path.chmod(0o555)
    try:
        assert "not writable for this user" in refusal(path)
    finally:
        tmp_path.chmod(0o755)


def test_the_reason_is_none_for_a_writable_state_file_and_folder(tmp_path: Path) -> None:
    assert state.unwritable_reason(tmp_path / "new.db") is None
    make_state(tmp_path / "state.db")
    assert state.unwritable_reason(tmp_path / "state.db") is None
