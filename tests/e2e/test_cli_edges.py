"""The command line's rough edges: one clear line and the usual exit code, never a traceback."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from tests.e2e.harness import command

pytestmark = pytest.mark.e2e


def offline_config(tmp_path: Path, **extra: object) -> Path:
    """A config the offline commands (status, retry, render) can load: no secrets are read."""
    inbox = tmp_path / "inbox"
    inbox.mkdir(exist_ok=True)
    document = {
        "watch": [{"path": str(inbox)}],
        "storage": {
            "bucket": "bucket",
            "access_key_id": "${X_ID}",
            "secret_access_key": "${X_SECRET}",
        },
        "speechkit": {"api_key": "${X_API_KEY}"},
        "state_file": str(tmp_path / "state.db"),
        **extra,
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    return path


def cli(config: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*command(), *arguments, "-c", str(config)],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip


def test_status_into_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    config = offline_config(tmp_path)
    process = subprocess.Popen(
        [*command(), "status", "-c", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None
    process.stdout.close()  # like `| head` that has read enough: every write now fails (EPIPE)
    _, stderr = process.communicate(timeout=60)
    assert b"Traceback" not in stderr
    assert b"BrokenPipe" not in stderr
    assert process.returncode == 1


def test_render_of_audio_a_folder_or_a_missing_file_is_one_line_each(tmp_path: Path) -> None:
    config = offline_config(tmp_path)
    audio = tmp_path / "call.ogg"
    audio.write_bytes(b"OggS\x00\x02\xff\xfe" * 16)
    (tmp_path / "call.json").write_text("{}", encoding="utf-8")
    folder = tmp_path / "results"
    folder.mkdir()
    failed = tmp_path / "memo.error.json"
    failed.write_text('{"stage": "check", "message": "empty"}', encoding="utf-8")
    for target, expected in [
        (audio, "call.ogg\": not a JSON file; render reads the NAME.json a transcription saved "
                "(its result would be"),
        (failed, "memo.error.json\": the error file of a failed transcription (stage check), "
                 "not a result"),
        (folder, "results\": is a folder; give the saved NAME.json files in it"),
        (tmp_path / "gone.json", "gone.json\": cannot read it: no such file or directory"),
    ]:  # fmt: skip
        result = cli(config, "render", str(target))
        assert result.returncode == 1
        assert "Traceback" not in result.stderr
        assert len(result.stderr.splitlines()) == 1, result.stderr
        assert expected in result.stderr


def test_render_of_a_malformed_v3_result_is_one_line_naming_the_file(tmp_path: Path) -> None:
    config = offline_config(tmp_path)
    garbled = tmp_path / "inbox" / "meeting.json"
    final = {"alternatives": [{"text": "hi", "words": 5}], "channelTag": "0"}
    garbled.write_text(json.dumps({
        "operation": {"id": "e03abc", "done": True}, "speakerLabeling": False,
        "getRecognition": [{"result": {"final": final, "channelTag": "0"}}],
    }), encoding="utf-8")  # fmt: skip
    result = cli(config, "render", str(garbled))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        f'speechkit-watch: "{garbled}": not a finished recognition result: getRecognition[0]'
        ".result.final.alternatives[0].words is a number, not a list (read as an API v3 result)"
    ]
    assert not (tmp_path / "inbox" / "meeting.txt").exists()


NOBODY = 65534


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None,
    reason="needs root and setpriv to run `transcribe` as a user the file's mode keeps out",
)
def test_transcribe_of_a_file_it_may_not_read_says_so_and_exits_1_at_once() -> None:
    # Not under pytest's tmp_path: that is private to root, and `nobody` must reach the config.
    folder = Path(tempfile.mkdtemp(prefix="skw-unreadable-"))
    try:
        folder.chmod(0o755)
        state_dir = folder / "state"
        state_dir.mkdir(mode=0o777)
        state_dir.chmod(0o777)
        config = offline_config(folder)
        (folder / "state.db").unlink(missing_ok=True)
        document = yaml.safe_load(config.read_text(encoding="utf-8"))
        document["state_file"] = str(state_dir / "state.db")
        config.write_text(yaml.safe_dump(document), encoding="utf-8")
        audio = folder / "inbox" / "private.ogg"
        shutil.copy(Path(__file__).resolve().parents[1] / "data" / "mono.ogg", audio)
        audio.chmod(0o600)  # owned by root: `nobody` may not read it
        started = time.monotonic()
        result = subprocess.run(
            ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
             *command(), "transcribe", str(audio), "-c", str(config)],
            capture_output=True, text=True, check=False, timeout=60,
            env={**os.environ, "X_ID": "id", "X_SECRET": "secret", "X_API_KEY": "key"},
        )  # fmt: skip
        assert result.returncode == 1, result.stderr
        assert 'private.ogg": cannot read: permission denied' in result.stderr
        assert "Traceback" not in result.stderr
        assert time.monotonic() - started < 20  # at once, not after growing waits
    finally:
        shutil.rmtree(folder)


def test_status_of_a_state_file_that_is_not_a_database_says_so_and_exits_1(
    tmp_path: Path,
) -> None:
    config = offline_config(tmp_path)
    (tmp_path / "state.db").write_bytes(b"these are not the rows you are looking for\n" * 100)
    shown = cli(config, "status")
    assert shown.returncode == 1
    assert shown.stdout == ""  # no counts of zero that look like an empty, healthy queue
    assert "state.db" in shown.stderr
    assert "Traceback" not in shown.stderr
    assert cli(config, "status", "--json").returncode == 1
    (tmp_path / "state.db").unlink()  # never created yet (the daemon has not run): all zero
    fresh = cli(config, "status")
    assert fresh.returncode == 0
    assert "queued 0" in fresh.stdout
