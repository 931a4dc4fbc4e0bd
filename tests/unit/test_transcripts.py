"""What NAME.txt, NAME.json and NAME.error.json say."""

from __future__ import annotations

import json
from typing import Any

from daemon.render import transcripts


def chunk(text: str, tag: str = "1", start: str | None = None) -> dict[str, Any]:
    words = (
        []
        if start is None
        else [{"word": text.split(maxsplit=1)[0], "startTime": start, "endTime": start}]
    )
    alternative: dict[str, Any] = {"text": text, "confidence": 1}
    if words:
        alternative["words"] = words
    return {"alternatives": [alternative], "channelTag": tag}


def done(*chunks: dict[str, Any]) -> dict[str, Any]:
    response: dict[str, Any] = {
        "@type": "type.googleapis.com/yandex.cloud.ai.stt.v2.LongRunningRecognitionResponse"
    }
    if chunks:
        response["chunks"] = list(chunks)
    return {"done": True, "id": "e03abc", "response": response}


def test_mono_is_one_plain_line_per_chunk_in_order() -> None:
    operation = done(chunk("привет мир", start="0.5s"), chunk("second one", start="0.1s"))
    assert transcripts.render_txt(operation) == "привет мир\nsecond one\n"


def test_several_channels_get_prefixes_and_time_order() -> None:
    operation = done(
        chunk("left first", "1", "0.2s"),
        chunk("left later", "1", "5.0s"),
        chunk("right middle", "2", "2.5s"),
    )
    assert transcripts.render_txt(operation) == (
        "[channel 1] left first\n[channel 2] right middle\n[channel 1] left later\n"
    )


def test_without_timings_several_channels_keep_the_service_order() -> None:
    operation = done(chunk("a", "1"), chunk("b", "2"))
    assert transcripts.render_txt(operation) == "[channel 1] a\n[channel 2] b\n"


def test_no_chunks_gives_an_empty_transcript() -> None:
    assert transcripts.render_txt(done()) == ""
    assert transcripts.render_txt({"done": True, "id": "x", "response": {}}) == ""


def test_text_with_newlines_stays_on_one_line() -> None:
    assert transcripts.render_txt(done(chunk("one\ntwo   three"))) == "one two three\n"


def test_json_is_the_operation_as_returned_with_unicode_kept() -> None:
    operation = done(chunk("ёжик"))
    text = transcripts.render_json(operation)
    assert "ёжик" in text
    assert json.loads(text) == operation
    assert text.endswith("\n")


def test_error_document_has_the_contract_fields() -> None:
    text = transcripts.render_error(
        file="/in/a.ogg",
        stage="check",
        message="not an Ogg file",
        at="2026-01-01T00:00:00Z",
        extra={"code": "not_ogg", "operation_id": None},
    )
    assert json.loads(text) == {
        "file": "/in/a.ogg",
        "stage": "check",
        "message": "not an Ogg file",
        "at": "2026-01-01T00:00:00Z",
        "code": "not_ogg",
    }


def test_duration_strings() -> None:
    assert transcripts.parse_duration("0.879999999s") == 0.879999999
    assert transcripts.parse_duration("12s") == 12.0
    assert transcripts.parse_duration("soon") is None
    assert transcripts.iso_time(0) == "1970-01-01T00:00:00Z"


def test_the_json_result_is_written_last() -> None:
    from daemon import render  # noqa: PLC0415

    assert render.writing_order(["json", "txt", "srt", "vtt"]) == ["txt", "srt", "vtt", "json"]


def test_several_channels_starting_at_once_go_by_channel_number() -> None:
    operation = done(
        chunk("right at once", "2", "1.0s"),
        chunk("tenth at once", "10", "1.0s"),
        chunk("left at once", "1", "1.0s"),
        chunk("right earlier", "2", "0.5s"),
    )
    assert transcripts.render_txt(operation) == (
        "[channel 2] right earlier\n[channel 1] left at once\n[channel 2] right at once\n"
        "[channel 10] tenth at once\n"
    )
