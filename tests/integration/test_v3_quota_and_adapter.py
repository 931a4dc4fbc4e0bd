"""API v3's status-check quota (5 per second, kept in the state file across restarts) and the
pure parts of the v3 adapter: the request body, the inline limit, the getRecognition stream."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest

from daemon import config, gate, state
from daemon.speechkit import v3
from tests.unit.test_config import minimal, parse


def v3_config() -> config.Config:
    document = minimal(speechkit={"api_key": "${YC_API_KEY}", "api": "v3"})
    del document["storage"]
    return parse(document)


def test_v3_status_checks_are_paced_per_second_and_the_pace_survives_a_restart(
    tmp_path: Path,
) -> None:
    settings = v3_config()
    store = state.Store(tmp_path / "state.db")
    first = gate.Gate(settings, store, lambda: 1000.0)
    assert [first.take(gate.CHECK_CALL, 1000.0) for _ in range(5)] == [0.0] * 5
    assert first.take(gate.CHECK_CALL, 1000.5) == pytest.approx(0.5)  # the sixth waits
    store.close()
    # A restart within the same second: the five calls are read back from the state file.
    reopened = state.Store(tmp_path / "state.db")
    second = gate.Gate(settings, reopened, lambda: 1000.2)
    assert second.take(gate.CHECK_CALL, 1000.2) == pytest.approx(0.8)
    assert second.take(gate.CHECK_CALL, 1001.0) == 0.0  # a second later there is room
    reopened.close()


def test_v2_keeps_its_hourly_status_check_quota(tmp_path: Path) -> None:
    store = state.Store(tmp_path / "state.db")
    window = gate.Gate(parse(minimal()), store, lambda: 0.0).windows[gate.CHECK_CALL]
    assert (window.limit, window.window) == (2500, 3600.0)
    store.close()


def test_inline_audio_and_its_limit(tmp_path: Path) -> None:
    audio = tmp_path / "a.ogg"
    audio.write_bytes(b"OggS-bytes")
    body = v3.request_body(audio, {"recognitionModel": {"model": "general"}})
    assert base64.b64decode(body["content"]) == b"OggS-bytes"
    assert "uri" not in body
    assert v3.request_body("https://storage/b/k.ogg", {})["uri"] == "https://storage/b/k.ogg"
    assert v3.inline_refusal(v3.MAX_INLINE_AUDIO_BYTES) is None
    refusal = v3.inline_refusal(v3.MAX_INLINE_AUDIO_BYTES + 1)
    assert refusal is not None
    assert "configure `storage`" in refusal
    # Base64 of the largest inline file, with the rest of the body, fits in 60 MB.
    assert v3.MAX_INLINE_AUDIO_BYTES * 4 // 3 + 64 * 1024 <= 60 * 1000 * 1000


def test_the_stream_is_read_line_by_line_and_garbage_is_named() -> None:
    assert v3.parse_stream('{"result": {"a": 1}}\n\n{"result": {"b": 2}}\n') == [
        {"result": {"a": 1}},
        {"result": {"b": 2}},
    ]
    assert v3.parse_stream('[{"result": {}}]') == [{"result": {}}]
    assert v3.parse_stream("") == []
    with pytest.raises(ValueError, match="line 2 of the getRecognition answer is not JSON"):
        v3.parse_stream('{"result": {}}\n<html>\n')


def test_the_inline_limit_is_given_alike_everywhere() -> None:
    """`check`, the refusal, the README, the example config, the config's own description and
    the no-storage drop-in give the same figure: the constant, rounded down."""
    assert v3.INLINE_LIMIT == "44.9 MB"
    shown = float(v3.INLINE_LIMIT.removesuffix(" MB")) * 1e6
    assert v3.MAX_INLINE_AUDIO_BYTES - 100_000 < shown <= v3.MAX_INLINE_AUDIO_BYTES
    refusal = v3.inline_refusal(v3.MAX_INLINE_AUDIO_BYTES + 1)
    assert refusal is not None
    assert f"({v3.INLINE_LIMIT})" in refusal
    root = Path(__file__).resolve().parents[2]
    storage = next(key for key in config.SCHEMA if key.name == "storage")
    texts = {
        "README.md": (root / "README.md").read_text(encoding="utf-8"),
        "config.example.yaml": (root / "config.example.yaml").read_text(encoding="utf-8"),
        "systemd/no-storage.conf": (root / "systemd/no-storage.conf").read_text(encoding="utf-8"),
        "storage description": storage.doc,
    }
    for where, text in texts.items():
        assert f"up to {v3.INLINE_LIMIT}" in text, where
        assert not re.search(r"inline[^.]*?(about 44 MB|45\.0 MB)", text, re.S), where
