"""Which finished operations are transcripts: the one check the daemon and `render` share."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from daemon.render import subtitles, transcripts
from speechkit_local import faults

RESPONSE_TYPE = "type.googleapis.com/yandex.cloud.ai.stt.v2.LongRunningRecognitionResponse"


def good_operation() -> dict[str, Any]:
    words = [
        {"startTime": "0.5s", "endTime": "0.9s", "word": "hello", "confidence": 1},
        {"startTime": "1s", "endTime": "1.4s", "word": "there", "confidence": 1},
    ]
    chunk = {
        "alternatives": [{"words": words, "text": "hello there", "confidence": 1}],
        "channelTag": "1",
    }
    return {
        "done": True,
        "response": {"@type": RESPONSE_TYPE, "chunks": [chunk]},
        "id": "e03abc",
        "createdAt": "2026-01-01T00:00:00Z",
        "createdBy": "ajeservice",
        "modifiedAt": "2026-01-01T00:00:02Z",
    }


def changed(path: str, value: Any) -> dict[str, Any]:
    """The good operation with the dotted `path` set to `value` (`-` deletes it)."""
    operation = copy.deepcopy(good_operation())
    *parents, last = path.split(".")
    target: Any = operation
    for part in parents:
        target = target[int(part)] if part.isdigit() else target[part]
    key: Any = int(last) if last.isdigit() else last
    if value == "-":
        del target[key]
    else:
        target[key] = value
    return operation


def test_a_well_formed_result_is_a_transcript() -> None:
    assert transcripts.result_problem(good_operation()) is None
    assert transcripts.render_txt(good_operation()) == "hello there\n"


def test_a_response_without_chunks_is_the_documented_no_speech() -> None:
    operation = changed("response.chunks", "-")
    assert transcripts.result_problem(operation) is None
    assert transcripts.render_txt(operation) == ""
    assert transcripts.result_problem(changed("response.chunks", [])) is None


@pytest.mark.parametrize(
    ("path", "value", "problem"),
    [
        ("response", "-", "response is missing"),
        ("response", None, "response is null, not an object"),
        ("response", [], "response is a list, not an object"),
        ("response.chunks", "hello there", "response.chunks is a string, not a list"),
        ("response.chunks", None, "response.chunks is null, not a list"),
        ("response.chunks", {"0": {}}, "response.chunks is an object, not a list"),
        ("response.chunks.0", "hello", "response.chunks[0] is a string, not an object"),
        ("response.chunks.0.alternatives", "x", "response.chunks[0].alternatives is a string, "),
        ("response.chunks.0.alternatives.0", 7, "response.chunks[0].alternatives[0] is a number"),
        ("response.chunks.0.alternatives.0.text", ["a"], "alternatives[0].text is a list, not a "),
        ("response.chunks.0.alternatives.0.words", {}, "alternatives[0].words is an object, not "),
        ("response.chunks.0.alternatives.0.words.1", None, "alternatives[0].words[1] is null"),
        ("response.chunks.0.alternatives.0.words.0.word", None, "words[0].word is null, not a st"),
        ("response.chunks.0.channelTag", True, "response.chunks[0].channelTag is a boolean"),
        (
            "response.chunks.0.alternatives.0.words.0.startTime",
            "soon",
            "startTime is a string, not a duration",
        ),
        ("response.chunks.0.alternatives.0.words.0.startTime", "9" * 400 + "s", "startTime is"),
        ("response.chunks.0.alternatives.0.words.1.endTime", 1e308, "words[1].endTime is a number"),
        ("response.chunks.0.alternatives.0.words.1.endTime", [1], "endTime is a list, not a dur"),
        ("error", "Invalid audio received", "error is a string, not an object"),
        ("error", {"message": "Invalid audio received"}, "error.code is missing"),
        ("error", {"code": "3", "message": "x"}, "error.code is a string, not a whole number"),
        ("error", {"code": True}, "error.code is a boolean, not a whole number"),
        ("done", "yes", "done is a string, not true"),
        ("done", False, "the operation is not done"),
        ("done", "-", "the operation is not done"),
    ],
)
def test_each_malformed_part_is_named(path: str, value: Any, problem: str) -> None:
    found = transcripts.result_problem(changed(path, value))
    assert found is not None
    assert problem in found


def test_something_that_is_no_object_is_no_result() -> None:
    assert (
        transcripts.result_problem([good_operation()]) == "the operation is a list, not an object"
    )


def test_the_documented_failure_is_an_error_object_with_an_integer_code() -> None:
    failure = {"code": 3, "message": "Invalid audio received", "details": []}
    operation = {"done": True, "error": failure, "id": "e03abc"}
    assert transcripts.documented_failure(operation) == failure
    assert transcripts.result_problem(operation) == (
        "the operation ended in an error (code 3: Invalid audio received)"
    )
    for malformed in ("Invalid audio received", {"code": "3"}, {"code": None}, [3]):
        assert transcripts.documented_failure({"done": True, "error": malformed}) is None
    # A null error beside a good response says nothing: the result is unambiguous.
    assert transcripts.result_problem(changed("error", None)) is None


@pytest.mark.parametrize("text", ["-", None])
def test_a_chunk_without_text_is_well_formed_and_never_prints_none(text: Any) -> None:
    operation = changed("response.chunks.0.alternatives.0.text", text)
    assert transcripts.result_problem(operation) is None
    assert transcripts.render_txt(operation) == "\n"
    srt = subtitles.render_srt(operation)
    assert "None" not in srt
    assert "hello there" in srt  # the words still say what was said
    without_words = changed("response.chunks.0.alternatives.0", {"text": text})
    assert "None" not in transcripts.render_txt(without_words)
    assert "None" not in subtitles.render_srt(without_words)


def test_a_null_channel_tag_is_channel_one() -> None:
    second = copy.deepcopy(good_operation()["response"]["chunks"][0])
    second["channelTag"] = "2"
    operation = changed("response.chunks.0.channelTag", None)
    operation["response"]["chunks"].append(second)
    assert transcripts.result_problem(operation) is None
    assert transcripts.render_txt(operation) == (
        "[channel 1] hello there\n[channel 2] hello there\n"
    )


def test_non_finite_times_are_no_times() -> None:
    assert transcripts.parse_duration(float("inf")) is None
    assert transcripts.parse_duration(float("nan")) is None
    assert transcripts.parse_duration(1.5) == 1.5
    # Beyond what a protobuf Duration holds: no number of milliseconds, so no time either.
    assert transcripts.parse_duration("9" * 400 + "s") is None
    assert transcripts.parse_duration(1e308) is None
    assert transcripts.parse_duration("315576000000s") == 315_576_000_000


def test_a_digit_that_is_no_number_is_a_channel_tag_like_any_other() -> None:
    second = copy.deepcopy(good_operation()["response"]["chunks"][0])
    second["channelTag"] = "\u00b2"  # "²": str.isdigit() says yes, int() says no
    operation = good_operation()
    operation["response"]["chunks"].append(second)
    assert transcripts.result_problem(operation) is None
    assert transcripts.render_txt(operation) == (
        "[channel 1] hello there\n[channel \u00b2] hello there\n"
    )
    assert "[channel \u00b2] hello there" in subtitles.render_srt(operation)


@pytest.mark.parametrize(
    ("kind", "problem"),
    [
        ("no_response", "response is missing"),
        ("null_response", "response is null, not an object"),
        ("chunks_not_list", "response.chunks is a string, not a list"),
        ("error_string", "error is a string, not an object"),
    ],
)
def test_every_malformed_answer_of_the_local_server_is_refused(kind: str, problem: str) -> None:
    answer = faults.malformed_answer(good_operation(), kind)
    assert answer["done"] is True
    assert answer["id"] == "e03abc"
    assert transcripts.result_problem(answer) == problem


def test_every_malformed_kind_has_a_test() -> None:
    assert set(faults.MALFORMED_KINDS) == {
        "no_response", "null_response", "chunks_not_list", "error_string"
    }  # fmt: skip


def test_malformed_fault_settings_are_checked() -> None:
    settings = faults.merge_fault_settings(
        faults.FaultSettings(), {"malformed_kind": "error_string", "malformed_next": 2}
    )
    assert (settings.malformed_kind, settings.malformed_next) == ("error_string", 2)
    assert settings.to_json()["malformed_next"] == 2
    for bad in ({"malformed_kind": "garbled"}, {"malformed_next": -1}, {"malformed_next": True}):
        with pytest.raises(ValueError, match="malformed_"):
            faults.merge_fault_settings(faults.FaultSettings(), bad)
    with pytest.raises(ValueError, match="unknown malformed kind"):
        faults.malformed_answer(good_operation(), "garbled")
