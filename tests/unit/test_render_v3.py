"""API v3 results: the getRecognition stream as the outputs show it (render.v3 + the renderers)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from daemon import render
from daemon.render import v3

OPERATION = {"id": "e03abc", "done": True, "createdAt": "2026-12-04T10:00:00Z"}

# The two messages of SPEECHKIT.md's "API v3" section, as they stand there.
DOCUMENTED = [
    json.loads(line)
    for line in (
        '{"result":{"sessionUuid":{"uuid":"s"},"audioCursors":{"receivedDataMs":"7400",'
        '"finalTimeMs":"7400","finalIndex":"0"},"responseWallTimeMs":"189","final":{'
        '"alternatives":[{"words":[{"text":"привет","startTimeMs":"459","endTimeMs":"900"}],'
        '"text":"привет","startTimeMs":"0","endTimeMs":"7400","confidence":0,"languages":[]}],'
        '"channelTag":"0"},"channelTag":"0"}}',
        '{"result":{"sessionUuid":{"uuid":"s"},"finalRefinement":{"finalIndex":"0",'
        '"normalizedText":{"alternatives":[{"text":"Привет.","startTimeMs":"0",'
        '"endTimeMs":"7400"}],"channelTag":"0"}},"channelTag":"0"}}',
    )
]


def final(index: int, channel: int, text: str, words: list[tuple[str, int, int]]) -> dict[str, Any]:
    return {
        "result": {
            "audioCursors": {"finalIndex": str(index)},
            "final": {
                "alternatives": [
                    {
                        "text": text,
                        "words": [
                            {"text": word, "startTimeMs": str(start), "endTimeMs": str(end)}
                            for word, start, end in words
                        ],
                        "startTimeMs": str(words[0][1]) if words else "0",
                    }
                ],
                "channelTag": str(channel),
            },
            "channelTag": str(channel),
        }
    }


def refinement(index: int, channel: int, text: str) -> dict[str, Any]:
    return {
        "result": {
            "finalRefinement": {
                "finalIndex": str(index),
                "normalizedText": {"alternatives": [{"text": text}], "channelTag": str(channel)},
            },
            "channelTag": str(channel),
        }
    }


def eou(channel: int) -> dict[str, Any]:
    return {"result": {"eouUpdate": {"timeMs": "100"}, "channelTag": str(channel)}}


def outputs(messages: list[Any], *, speakers: bool = False) -> dict[str, str]:
    document = v3.document(OPERATION, messages, speakers=speakers)
    assert render.result_problem(document) is None
    return render.documents(document, ["txt", "srt", "vtt", "json"])


def test_documented_example_uses_the_refinement_not_the_final() -> None:
    written = outputs(DOCUMENTED)
    assert written["txt"] == "Привет.\n"
    # Subtitles: the refined text, timed by the final's word timings.
    assert written["srt"] == "1\n00:00:00,459 --> 00:00:00,900\nПривет.\n"  # noqa: RUF001
    assert written["vtt"].startswith("WEBVTT\n\n00:00:00.459 --> ")


def test_json_holds_the_operation_and_the_messages_unchanged_in_order() -> None:
    written = outputs(DOCUMENTED)
    saved = json.loads(written["json"])
    assert saved["operation"] == OPERATION
    assert saved["getRecognition"] == DOCUMENTED
    assert render.kind(saved) == "API v3"
    assert render.result_id(saved) == "e03abc"
    assert render.operation_of(saved) == OPERATION  # what the schedule learns its speed from
    assert render.kind(OPERATION) == "API v2"


def test_a_final_without_refinement_is_used_as_it_is() -> None:
    written = outputs([final(0, 0, "raz dva", [("raz", 0, 300), ("dva", 400, 800)])])
    assert written["txt"] == "raz dva\n"


def test_refinements_out_of_order_and_before_their_final() -> None:
    messages = [
        refinement(1, 0, "Second."),  # before its final
        final(0, 0, "first", [("first", 0, 500)]),
        final(1, 0, "second", [("second", 2000, 2500)]),
        eou(0),
        refinement(0, 0, "First."),  # after the final of the next utterance
    ]
    assert outputs(messages)["txt"] == "First.\nSecond.\n"


def test_empty_stream_and_empty_finals_give_an_empty_transcript() -> None:
    assert outputs([])["txt"] == ""
    assert outputs([final(0, 0, "", []), eou(0)])["txt"] == ""
    assert outputs([])["srt"] == ""


def test_two_channels_in_time_order_with_one_based_numbers() -> None:
    messages = [
        final(0, 0, "hello", [("hello", 0, 500)]),
        final(1, 0, "bye", [("bye", 3000, 3500)]),
        final(0, 1, "hi there", [("hi", 1000, 1300), ("there", 1400, 1800)]),
        refinement(0, 1, "Hi there!"),
    ]
    written = outputs(messages)
    assert written["txt"] == "[channel 1] hello\n[channel 2] Hi there!\n[channel 1] bye\n"
    assert "[channel 2] Hi there!" in written["srt"]
    assert "[channel 1] hello" in written["vtt"]


def test_two_speakers_are_labelled_as_speakers() -> None:
    messages = [
        final(0, 0, "good morning", [("good", 0, 300), ("morning", 300, 800)]),
        final(0, 1, "morning", [("morning", 1000, 1500)]),
        refinement(0, 0, "Good morning."),
    ]
    written = outputs(messages, speakers=True)
    assert written["txt"] == "[speaker 1] Good morning.\n[speaker 2] morning\n"
    assert "[speaker 2] morning" in written["srt"]
    assert "[channel" not in written["srt"]


def test_one_speaker_is_still_labelled_with_speaker_labeling() -> None:
    written = outputs([final(0, 0, "alone", [("alone", 0, 500)])], speakers=True)
    assert written["txt"] == "[speaker 1] alone\n"


def test_malformed_documents_are_named() -> None:
    assert v3.problem({"operation": {"done": True}, "getRecognition": []}) is not None
    assert "not done" in str(v3.problem({"operation": {"id": "x"}, "getRecognition": []}))
    broken = v3.document(OPERATION, [{"result": {"final": "text"}}], speakers=False)
    assert "result.final is 'text', not an object" in str(render.result_problem(broken))
    error = v3.document(OPERATION, [{"error": {"code": 5, "message": "gone"}}], speakers=False)
    assert "gone" in str(render.result_problem(error))


def with_result(**parts: Any) -> dict[str, Any]:
    """A document of one message: the documented final with `parts` of its result replaced."""
    message = json.loads(json.dumps(DOCUMENTED[0]))
    message["result"].update(parts)
    return v3.document(OPERATION, [message], speakers=False)


def alternative(**parts: Any) -> dict[str, Any]:
    """The documented final's alternative with `parts` replaced."""
    return {**DOCUMENTED[0]["result"]["final"]["alternatives"][0], **parts}


def word(**parts: Any) -> dict[str, Any]:
    return {"text": "hi", "startTimeMs": "459", "endTimeMs": "900", **parts}


def normalized(**parts: Any) -> dict[str, Any]:
    return {"finalIndex": "0", "normalizedText": {"alternatives": [{"text": "Hi."}]}, **parts}


@pytest.mark.parametrize(
    ("result", "problem"),
    [
        (
            {"final": {"alternatives": [alternative(words=5)]}},
            "final.alternatives[0].words is a number, not a list",
        ),
        ({"final": {"alternatives": [alternative(words=True)]}}, "words is a boolean, not a list"),
        ({"final": {"alternatives": [alternative(words="hi")]}}, "words is 'hi', not a list"),
        ({"final": {"alternatives": [alternative(words=[5])]}}, "words[0] is a number, not an"),
        ({"final": {"alternatives": ["hi"]}}, "final.alternatives[0] is 'hi', not an object"),
        ({"final": {"alternatives": [alternative(text={"a": 1})]}}, "text is an object, not a st"),
        (
            {"final": {"alternatives": [alternative(words=[word(text=7)])]}},
            "words[0].text is a number, not a string",
        ),
        (
            {"final": {"alternatives": [alternative(words=[word(startTimeMs="soon")])]}},
            "words[0].startTimeMs is 'soon', not a whole number >= 0",
        ),
        (
            {"final": {"alternatives": [alternative(words=[word(endTimeMs="9" * 400)])]}},
            "words[0].endTimeMs is a string, not a whole number >= 0",
        ),
        (
            {"final": {"alternatives": [alternative(words=[word(endTimeMs=10**30)])]}},
            "words[0].endTimeMs is a number",
        ),
        ({"final": {"alternatives": [alternative(startTimeMs=[0])]}}, "alternatives[0].startTi"),
        ({"final": {"alternatives": [], "channelTag": "left"}}, "final.channelTag is 'left'"),
        ({"channelTag": {"tag": 0}}, "result.channelTag is an object, not a whole number >= 0"),
        ({"audioCursors": "0"}, "result.audioCursors is '0', not an object"),
        ({"audioCursors": {"finalIndex": "-1"}}, "audioCursors.finalIndex is '-1', not a whole"),
        (
            {"final": None, "finalRefinement": normalized(finalIndex="x")},
            "finalRefinement.finalIndex is 'x'",
        ),
        (
            {"final": None, "finalRefinement": normalized(normalizedText=[])},
            "finalRefinement.normalizedText is a list, not an object",
        ),
        (
            {"final": None, "finalRefinement": normalized(normalizedText={"alternatives": [3]})},
            "normalizedText.alternatives[0] is a number, not an object",
        ),
    ],
)
def test_every_part_the_transcript_is_made_of_is_checked(
    result: dict[str, Any], problem: str
) -> None:
    document = with_result(**result)
    found = render.result_problem(document)
    assert found is not None
    assert problem in found, found
    assert found.startswith("getRecognition[0].result.")


def test_a_document_without_a_problem_renders() -> None:
    """What `problem` lets through, the renderers turn into outputs: no word is fatal."""
    for result in (
        {"final": {"alternatives": [alternative(words=[word(startTimeMs=None), word()])]}},
        {"final": {"alternatives": [alternative(words=None, text=None)]}},
        {"final": {"alternatives": [alternative(words=[word(startTimeMs=2**63 - 1)])]}},
        {"final": None, "finalRefinement": normalized(normalizedText=None)},
    ):
        document = with_result(**result)
        assert render.result_problem(document) is None
        assert "WEBVTT" in render.documents(document, ["txt", "srt", "vtt", "json"])["vtt"]
