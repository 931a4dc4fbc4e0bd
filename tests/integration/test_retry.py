"""`retry` as a user runs it after fixing the config or the file: real state file, no servers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from daemon import cli, state

DATA = Path(__file__).resolve().parents[1] / "data"


def write_config(tmp_path: Path, recognition: dict[str, str]) -> Path:
    inbox = tmp_path / "inbox"
    inbox.mkdir(exist_ok=True)
    document = {
        "watch": [{"path": str(inbox), "recognition": recognition}],
        "storage": {"bucket": "bucket", "access_key_id": "${X}", "secret_access_key": "${X}"},
        "speechkit": {"api_key": "${X}"},
        "state_file": str(tmp_path / "state.db"),
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    return path


def failed_row(tmp_path: Path, name: str, stage: str, specification: dict[str, str]) -> int:
    inbox = tmp_path / "inbox"
    store = state.Store(tmp_path / "state.db")
    row_id = store.add_version(
        path=str(inbox / name), folder=str(inbox), size=1, mtime_ns=1, now=1.0
    )
    store.update(row_id, 2.0, sha256="ab" * 32, specification=json.dumps(specification))
    store.update(row_id, 3.0, state=state.FAILED, stage=stage, message="refused", due_at=None)
    store.close()
    return row_id


def recorded(tmp_path: Path, row_id: int) -> state.FileRow:
    store = state.Store(tmp_path / "state.db", read_only=True)
    try:
        return store.get(row_id)
    finally:
        store.close()


def test_retry_sends_the_file_with_the_settings_the_config_gives_it_now(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config_path = write_config(tmp_path, {"model": "general", "language": "en-US"})
    old = {"model": "general:rc", "languageCode": "ru-RU"}
    row_id = failed_row(tmp_path, "call.ogg", "submit", old)
    assert cli.main(["retry", str(tmp_path / "inbox" / "call.ogg"), "-c", str(config_path)]) == 0
    row = recorded(tmp_path, row_id)
    assert row.state == state.QUEUED
    assert row.specification is not None
    sent = json.loads(row.specification)
    assert (sent["model"], sent["languageCode"]) == ("general", "en-US")
    out = capsys.readouterr().out
    assert "with the config's current settings for its folder: model general, language en-US" in out
    assert "(it failed with model general:rc, language ru-RU)" in out


def test_retry_of_a_path_it_does_not_know_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config_path = write_config(tmp_path, {})
    assert cli.main(["retry", str(tmp_path / "nothing.ogg"), "-c", str(config_path)]) == 1
    assert "is not known to the daemon" in capsys.readouterr().err


def test_a_file_the_local_check_refused_is_requeued_only_once_it_passes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config_path = write_config(tmp_path, {})
    audio = tmp_path / "inbox" / "memo.wav"
    shutil.copy(DATA / "formats" / "notes.wav", audio)  # text named .wav
    row_id = failed_row(tmp_path, "memo.wav", "check", {"model": "general"})
    assert cli.main(["retry", str(audio), "-c", str(config_path)]) == 1
    err = capsys.readouterr().err
    assert "is still refused by the local check (The file is not audio the decoder can read" in err
    assert "not re-queued" in err
    assert recorded(tmp_path, row_id).state == state.FAILED
    # Replaced by a real recording that is not Ogg Opus: the daemon converts it, so retry takes
    # it (the check retry runs is the daemon's, conversion included).
    shutil.copy(DATA / "formats" / "alaw_8k.wav", audio)
    assert cli.main(["retry", "--failed", "-c", str(config_path)]) == 0
    assert recorded(tmp_path, row_id).state == state.QUEUED
