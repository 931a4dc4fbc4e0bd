"""The state store on real SQLite files."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from daemon import lifecycle, state


def open_store(tmp_path: Path) -> state.Store:
    return state.Store(tmp_path / "sub" / "state.db")


def test_new_state_file_is_wal_with_a_schema_version(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    store.close()
    db = sqlite3.connect(tmp_path / "sub" / "state.db")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA user_version").fetchone()[0] == state.SCHEMA_VERSION
    db.close()


def test_a_version_moves_through_states_and_survives_reopening(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    row_id = store.add_version(path="/in/a.ogg", folder="/in", size=10, mtime_ns=5, now=100.0)
    assert [row.id for row in store.due(100.0, limit=10)] == [row_id]
    assert store.update(row_id, 101.0, expect=state.QUEUED, state=state.UPLOADING, sha256="ab")
    assert not store.update(row_id, 102.0, expect=state.QUEUED, state=state.FAILED)
    store.update(row_id, 102.5, state=state.SUBMITTING)
    store.update(row_id, 103.0, state=state.PENDING, operation_id="e03x", due_at=200.0)
    store.close()
    again = open_store(tmp_path)
    row = again.get(row_id)
    assert (row.state, row.operation_id, row.sha256, row.due_at) == (
        state.PENDING,
        "e03x",
        "ab",
        200.0,
    )
    assert again.due(150.0, limit=10) == []
    assert again.next_due_at() == 200.0
    assert again.known_versions() == {"/in/a.ogg": (10, 5)}
    again.close()


def test_a_new_version_supersedes_the_unfinished_old_one(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    old = store.add_version(path="/in/a.ogg", folder="/in", size=10, mtime_ns=5, now=1.0)
    new = store.add_version(path="/in/a.ogg", folder="/in", size=20, mtime_ns=6, now=2.0)
    assert store.get(old).state == state.SUPERSEDED
    assert store.get(new).state == state.QUEUED
    assert store.known_versions() == {"/in/a.ogg": (20, 6)}
    store.close()


def test_names_that_are_not_utf8_or_hold_newlines_round_trip(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    odd = "/in/bad\udcff name\nwith newline.ogg"
    row_id = store.add_version(path=odd, folder="/in", size=1, mtime_ns=1, now=1.0)
    assert store.get(row_id).path == odd
    assert store.latest_for_path(odd) is not None
    store.close()


def test_retry_requeues_failed_rows_only(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    failed = store.add_version(path="/in/f.ogg", folder="/in", size=1, mtime_ns=1, now=1.0)
    store.update(failed, 2.0, state=state.FAILED, stage="check", message="bad", due_at=None)
    done = store.add_version(path="/in/d.ogg", folder="/in", size=1, mtime_ns=1, now=1.0)
    store.update(done, 2.0, state=state.DONE, due_at=None)
    assert store.requeue(paths=["/in/d.ogg"], now=3.0, specification=lambda row: "{}") == 0
    assert store.requeue(all_failed=True, now=3.0, specification=lambda row: "{}") == 1
    row = store.get(failed)
    assert (row.state, row.message, row.due_at) == (state.QUEUED, None, 3.0)
    store.close()


def test_status_can_read_while_another_process_writes(tmp_path: Path) -> None:
    writer = open_store(tmp_path)
    writer.add_version(path="/in/a.ogg", folder="/in", size=1, mtime_ns=1, now=1.0)
    reader = state.Store(tmp_path / "sub" / "state.db", read_only=True)
    assert reader.counts()[state.QUEUED] == 1
    writer.add_version(path="/in/b.ogg", folder="/in", size=1, mtime_ns=1, now=1.0)
    assert reader.counts()[state.QUEUED] == 2
    reader.close()
    writer.close()


def test_a_corrupt_state_file_is_a_clear_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = state.Store(path)
    for index in range(200):
        store.add_version(path=f"/in/{index}.ogg", folder="/in", size=1, mtime_ns=1, now=1.0)
    store.close()
    data = bytearray(path.read_bytes())
    data[2 * 4096 : 2 * 4096 + 8] = b"\xff" * 8  # scribble over a b-tree page header
    path.write_bytes(bytes(data))
    with pytest.raises(state.StateFileError) as caught:
        state.Store(path)
    assert str(path) in str(caught.value)


def test_a_file_that_is_not_sqlite_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(state.StateFileError, match=r"state\.db"):
        state.Store(path)


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    state.Store(path).close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {state.SCHEMA_VERSION + 1}")
    db.commit()
    db.close()
    with pytest.raises(state.StateFileError, match="newer than this"):
        state.Store(path)


def test_committed_rows_survive_a_killed_writer(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    script = (
        "import os, sys; from daemon import state\n"
        f"store = state.Store(__import__('pathlib').Path({str(path)!r}))\n"
        "row = store.add_version(path='/in/a.ogg', folder='/in', size=1, mtime_ns=1, now=1.0)\n"
        "store.update(row, 2.0, state='pending', operation_id='e03kill')\n"
        "os.kill(os.getpid(), 9)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], check=False, cwd=Path(__file__).parents[2]
    )
    assert result.returncode == -9
    store = state.Store(path)
    assert [row.operation_id for row in store.in_states([state.PENDING])] == ["e03kill"]
    store.close()


def test_an_old_state_file_is_migrated_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    db = sqlite3.connect(path)
    db.executescript(state._MIGRATIONS[1])  # what the first release created
    db.execute(
        "INSERT INTO files (path, folder, size, mtime_ns, state, operation_id, created_at, "
        "updated_at) VALUES (?, ?, 1, 2, 'pending', 'e03old', 0, 0)",
        (b"/in/old.ogg", b"/in"),
    )
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()
    store = state.Store(path)
    rows = store.in_states([state.PENDING])
    assert [
        (row.path, row.operation_id, row.owner, row.hook_pending, row.output_name) for row in rows
    ] == [("/in/old.ogg", "e03old", None, 0, None)]
    store.record_call("submit", 100.0)  # the v2 table exists
    assert store.recent_calls("submit", 0.0) == [100.0]
    assert store.undelivered_count() == 0  # the v5 outbox exists
    store.close()
    check = sqlite3.connect(path)
    assert check.execute("PRAGMA user_version").fetchone()[0] == state.SCHEMA_VERSION == 5
    check.close()


def test_only_one_of_two_twins_claims_the_upload(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    first = store.add_version(path="/a/x.ogg", folder="/a", size=1, mtime_ns=1, now=1.0)
    second = store.add_version(path="/b/x.ogg", folder="/b", size=1, mtime_ns=1, now=1.0)
    for row_id in (first, second):
        store.update(row_id, 2.0, sha256="same", specification='{"model": "general"}')
    assert store.claim_upload(first, "prefix/same.ogg", 3.0) is True
    assert store.claim_upload(second, "prefix/same.ogg", 3.0) is False
    assert store.get(second).state == state.QUEUED
    other = store.add_version(path="/c/x.ogg", folder="/c", size=1, mtime_ns=1, now=1.0)
    store.update(other, 2.0, sha256="same", specification='{"model": "deferred-general"}')
    assert store.claim_upload(other, "prefix/same.ogg", 3.0) is True  # other settings: no twin
    store.close()


def test_work_already_paid_for_comes_first(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    rows = {}
    for index, wanted in enumerate(
        [state.QUEUED, state.UPLOADING, state.SUBMITTING, state.PENDING]
    ):
        row_id = store.add_version(path=f"/in/{wanted}.ogg", folder="/in", size=1,
                                   mtime_ns=1, now=10.0 + index)  # fmt: skip
        path = [state.QUEUED, state.UPLOADING, state.SUBMITTING, state.PENDING]
        for step in path[1 : path.index(wanted) + 1]:  # the way a file really goes
            store.update(row_id, 10.0 + index, state=step)
        store.update(row_id, 10.0 + index, due_at=10.0 + index)
        rows[wanted] = row_id
    order = [row.state for row in store.due(100.0, limit=10)]
    assert order == [state.PENDING, state.SUBMITTING, state.UPLOADING, state.QUEUED]
    assert [row.state for row in store.due(100.0, limit=1)] == [state.PENDING]


def test_due_takes_each_state_in_order_up_to_the_limit_skipping_excluded_rows(
    tmp_path: Path,
) -> None:
    store = open_store(tmp_path)
    queued = [
        store.add_version(path=f"/in/q{n}.ogg", folder="/in", size=1, mtime_ns=1, now=20.0 - n)
        for n in range(3)
    ]  # added later, due earlier: due time, not id, orders them
    pending = store.add_version(path="/in/p.ogg", folder="/in", size=1, mtime_ns=1, now=30.0)
    for step in (state.UPLOADING, state.SUBMITTING, state.PENDING):
        store.update(pending, 30.0, state=step)
    store.update(pending, 30.0, due_at=30.0)
    later = store.add_version(path="/in/later.ogg", folder="/in", size=1, mtime_ns=1, now=99.0)
    store.update(later, 99.0, due_at=500.0)  # not due yet
    assert [row.id for row in store.due(100.0, limit=3)] == [pending, queued[2], queued[1]]
    assert [row.id for row in store.due(100.0, limit=10, exclude=[pending, queued[1]])] == [
        queued[2], queued[0],
    ]  # fmt: skip
    assert store.next_due_at() == 18.0
    assert store.next_due_at(exclude=[queued[2], queued[1], queued[0]]) == 30.0
    assert store.next_due_at(exclude=[queued[2], queued[1], queued[0], pending]) == 500.0


def test_due_walks_an_index_instead_of_sorting_every_due_row(tmp_path: Path) -> None:
    """A backlog of thousands must not cost a sort of all of them each time work is handed
    out: every query `due` and `next_due_at` make is an index search with no sort step."""
    store = open_store(tmp_path)
    plans: list[str] = []
    original = store._db
    seen: list[str] = []
    original.set_trace_callback(seen.append)
    store.due(100.0, limit=4, exclude=[1, 2])
    store.next_due_at(exclude=[1])
    original.set_trace_callback(None)
    selects = [statement for statement in seen if statement.lstrip().startswith("SELECT")]
    assert len(selects) == 2 * len(state.DUE_ORDER)
    assert set(state.DUE_ORDER) == set(state.ACTIVE_STATES)
    for statement in selects:
        steps = original.execute(f"EXPLAIN QUERY PLAN {statement}").fetchall()
        plans.append(" / ".join(str(step[3]) for step in steps))
    for shown in plans:
        assert "USING INDEX files_state_due" in shown, shown
        assert "TEMP B-TREE" not in shown, shown


def test_a_deleted_or_replaced_state_file_is_noticed(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    assert store.replaced() is None
    copy = tmp_path / "copy.db"
    copy.write_bytes(store.path.read_bytes())
    store.path.unlink()
    assert store.replaced() == "it was deleted"
    copy.rename(store.path)
    assert store.replaced() == "another file took its place"


def test_a_move_the_lifecycle_does_not_allow_is_refused_and_changes_nothing(
    tmp_path: Path,
) -> None:
    store = open_store(tmp_path)
    row_id = store.add_version(path="/in/a.ogg", folder="/in", size=1, mtime_ns=1, now=1.0)
    with pytest.raises(lifecycle.TransitionRefusedError, match="queued -> submitting"):
        store.update(row_id, 2.0, state=state.SUBMITTING, operation_id="e03x")
    row = store.get(row_id)
    assert (row.state, row.operation_id, row.updated_at) == (state.QUEUED, None, 1.0)
    with pytest.raises(lifecycle.TransitionRefusedError):
        store.apply(row, lifecycle.uploaded(3.0), 3.0)  # the upload comes after the claim
    assert store.update(row_id, 3.0, state=state.UPLOADING)
    row = store.get(row_id)
    assert store.apply(row, lifecycle.uploaded(3.0), 3.0)
    assert store.get(row_id).state == state.SUBMITTING
    # Applied to a row read before it moved on: nothing happens (compare-and-set).
    assert not store.apply(row, lifecycle.gone("vanished"), 4.0)
    assert store.get(row_id).state == state.SUBMITTING


def test_the_first_file_of_a_stem_keeps_its_names(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    wav = store.add_version(path="/in/call.wav", folder="/in", size=1, mtime_ns=1, now=1.0)
    mp3 = store.add_version(path="/in/call.mp3", folder="/in", size=1, mtime_ns=1, now=2.0)
    other = store.add_version(path="/in/sub/call.m4a", folder="/in", size=1, mtime_ns=1, now=3.0)
    assert not store.stem_taken(store.get(wav), "call")  # the first one
    assert store.stem_taken(store.get(mp3), "call")  # call.wav had it first
    assert not store.stem_taken(store.get(other), "call")  # another folder
    store.update(mp3, 4.0, output_name="call.mp3")
    flac = store.add_version(path="/in/call.flac", folder="/in", size=1, mtime_ns=1, now=5.0)
    assert store.stem_taken(store.get(flac), "call")
    # A file that vanished before its end holds no names.
    store.update(wav, 6.0, state=state.GONE)
    assert not store.stem_taken(store.get(flac), "call")
