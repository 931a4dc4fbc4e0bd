"""A file the daemon may not read: its reason in `status`, a bounded wait, then `failed` at check.

File modes do not stop root (CI runs as root), so the refusal of the read is injected into the
local check; everything else (the state file, the steps, the error file, `retry`) is real.
"""

from __future__ import annotations

import json
import random
import shutil
import threading
from pathlib import Path

import pytest

from daemon import audio, cli, config, lifecycle, state
from daemon.steps import Context, Steps
from daemon.storage import ObjectStore

DATA = Path(__file__).resolve().parents[1] / "data"
FOUND_AT = 1_000.0


def settings_for(tmp_path: Path) -> config.Config:
    document = {
        "watch": [{"path": str(tmp_path / "inbox")}],
        "storage": {"bucket": "bucket", "access_key_id": "id", "secret_access_key": "secret"},
        "speechkit": {"api_key": "key"},
        "state_file": str(tmp_path / "state.db"),
    }
    return config.parse(document, source=tmp_path / "config.yaml", environ={})


def refuse_reads(path: Path, work_dir: Path | None = None, name: str = "") -> audio.PreparedAudio:
    raise PermissionError(13, "Permission denied", str(path))


def test_an_unreadable_file_says_why_waits_a_bounded_time_then_fails_at_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "inbox").mkdir()
    audio_path = tmp_path / "inbox" / "call.ogg"
    shutil.copy(DATA / "mono.ogg", audio_path)
    settings = settings_for(tmp_path)
    store = state.Store(settings.state_file)
    found = audio_path.stat()
    row_id = store.add_version(
        path=str(audio_path), folder=str(tmp_path / "inbox"), size=found.st_size,
        mtime_ns=found.st_mtime_ns, now=FOUND_AT,
    )  # fmt: skip
    now = [FOUND_AT]
    steps = Steps(Context(
        settings, store, ObjectStore(settings.storage), api=None,  # type: ignore[arg-type]
        clock=lambda: now[0], rng=random.Random(1), stopping=threading.Event(),
        on_changed=lambda path: None,
    ))  # fmt: skip
    monkeypatch.setattr(audio, "prepare", refuse_reads)

    steps.advance(row_id)
    row = store.get(row_id)
    assert (row.state, row.message) == (state.QUEUED, "cannot read: permission denied")
    report = cli.status_report(store, settings.quota, now[0])
    assert report["in_progress"][0]["waiting_because"] == "cannot read: permission denied"

    looks = 0
    while store.get(row_id).state == state.QUEUED:  # each look when it is due, never forever
        due = store.get(row_id).due_at
        assert due is not None
        assert due <= FOUND_AT + lifecycle.UNREADABLE_WAIT_SECONDS + 1.0
        now[0] = due
        steps.advance(row_id)
        looks += 1
        assert looks < 50
    row = store.get(row_id)
    assert (row.state, row.stage) == (state.FAILED, "check")
    assert row.message is not None
    assert row.message.startswith("cannot read: permission denied (waited 10 min")
    error = json.loads((tmp_path / "inbox" / "call.error.json").read_text(encoding="utf-8"))
    assert error["stage"] == "check"
    assert "permission denied" in error["message"]
    store.close()

    monkeypatch.undo()  # the owner or mode was fixed: `retry` takes it up again
    config_file = tmp_path / "config.yaml"
    config_file.write_text(
        json.dumps({
            "watch": [{"path": str(tmp_path / "inbox")}],
            "storage": {"bucket": "bucket", "access_key_id": "id", "secret_access_key": "s"},
            "speechkit": {"api_key": "key"},
            "state_file": str(tmp_path / "state.db"),
        }),
        encoding="utf-8",
    )  # fmt: skip
    assert cli.main(["retry", str(audio_path), "-c", str(config_file)]) == 0
    assert "re-queued 1 file(s)" in capsys.readouterr().out


def test_the_wait_ends_at_the_bound_but_always_looks_once_more() -> None:
    first = lifecycle.unreadable(FOUND_AT, 0, FOUND_AT + 5_000.0, "cannot read: x", 2.0)
    assert first is not None  # found long ago (the daemon was stopped): one more look
    assert first.fields["due_at"] == FOUND_AT + 5_000.0 + 1.0
    assert lifecycle.unreadable(FOUND_AT, 1, FOUND_AT + 5_000.0, "cannot read: x", 2.0) is None
    near_end = lifecycle.unreadable(FOUND_AT, 3, FOUND_AT + 590.0, "cannot read: x", 300.0)
    assert near_end is not None
    assert near_end.fields["due_at"] == FOUND_AT + lifecycle.UNREADABLE_WAIT_SECONDS
