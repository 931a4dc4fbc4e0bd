"""Upload progress as `status` reads it from the daemon's board beside the state file."""

from __future__ import annotations

from pathlib import Path

from daemon import uploads


def test_the_board_publishes_progress_that_status_reads_back(tmp_path: Path) -> None:
    state_file = tmp_path / "state.db"
    uploads.board_path(state_file).write_text("{}")  # left by an earlier run
    now = [1000.0]
    board = uploads.Board(state_file, lambda: now[0])
    assert not uploads.board_path(state_file).exists()
    board.update(7, 250, 1000, 50.0)
    board.update(7, 500, 1000, 60.0)  # within PUBLISH_SECONDS: kept in memory only
    assert uploads.read(state_file, now[0]) == {7: uploads.Progress(250, 1000, 50.0, 1000.0)}
    now[0] += uploads.PUBLISH_SECONDS
    board.update(7, 600, 1000, 60.0)
    shown = uploads.describe(uploads.read(state_file, now[0])[7])
    assert (shown["percent"], shown["bytes_per_second"]) == (60.0, 60)
    assert uploads.read(state_file, now[0] + uploads.STALE_SECONDS) == {}  # a stopped daemon's
    board.finish(7)
    assert uploads.read(state_file, now[0]) == {}


def test_anything_but_a_board_reads_as_no_progress() -> None:
    assert uploads.parse("not json") == {}
    assert uploads.parse('{"x": {"sent_bytes": 1}}') == {}
    assert uploads.parse("[1, 2]") == {}
