"""The cue builder and the SubRip / WebVTT writers."""

from __future__ import annotations

import re
from typing import Any

from daemon import subtitles

SRT_BLOCK = re.compile(
    r"^(\d+)\n(\d\d):(\d\d):(\d\d),(\d{3}) --> (\d\d):(\d\d):(\d\d),(\d{3})\n((?:.+\n){1,2})$"
)
VTT_TIMING = re.compile(r"^(\d\d):(\d\d):(\d\d)\.(\d{3}) --> (\d\d):(\d\d):(\d\d)\.(\d{3})$")


def seconds(hours: str, minutes: str, secs: str, millis: str) -> float:
    return int(hours) * 3600 + int(minutes) * 60 + int(secs) + int(millis) / 1000


def word(text: str, start: float, end: float) -> dict[str, Any]:
    return {"word": text, "startTime": f"{start:.3f}s", "endTime": f"{end:.3f}s", "confidence": 1}


def chunk(words: list[dict[str, Any]], tag: str = "1") -> dict[str, Any]:
    text = " ".join(item["word"] for item in words)
    return {"alternatives": [{"text": text, "words": words, "confidence": 1}], "channelTag": tag}


def operation(*chunks: dict[str, Any]) -> dict[str, Any]:
    return {"done": True, "id": "e03", "response": {"chunks": list(chunks)}}


def parse_srt(text: str) -> list[tuple[int, float, float, list[str]]]:
    """Parse SubRip strictly: every block must match the format exactly."""
    assert text.endswith("\n")
    cues = []
    for block in text.split("\n\n"):
        match = SRT_BLOCK.match(block if block.endswith("\n") else block + "\n")
        assert match, f"not a SubRip block: {block!r}"
        groups = match.groups()
        cues.append((int(groups[0]), seconds(*groups[1:5]), seconds(*groups[5:9]),
                     groups[9].rstrip("\n").split("\n")))  # fmt: skip
    return cues


def parse_vtt(text: str) -> list[tuple[float, float, list[str]]]:
    assert text.startswith("WEBVTT\n\n")
    cues = []
    for block in text[len("WEBVTT\n\n") :].split("\n\n"):
        if not block.strip():
            continue
        lines = block.rstrip("\n").split("\n")
        match = VTT_TIMING.match(lines[0])
        assert match, f"not a WebVTT timing line: {lines[0]!r}"
        cues.append((seconds(*match.groups()[:4]), seconds(*match.groups()[4:]), lines[1:]))
    return cues


def assert_well_formed(cues: list[tuple[float, float, list[str]]]) -> None:
    for index, (start, end, lines) in enumerate(cues):
        assert end > start
        assert 1 <= len(lines) <= 2
        if index:
            assert start >= cues[index - 1][1], "cues overlap"


def long_speech(count: int, tag: str = "1", offset: float = 0.0) -> dict[str, Any]:
    return chunk(
        [word(f"word{i}", offset + i * 0.4, offset + i * 0.4 + 0.35) for i in range(count)], tag
    )


def test_srt_is_numbered_from_one_with_comma_milliseconds() -> None:
    text = subtitles.render_srt(operation(long_speech(40)))
    cues = parse_srt(text)
    assert [number for number, *_ in cues] == list(range(1, len(cues) + 1))
    assert len(cues) > 2
    assert_well_formed([(start, end, lines) for _, start, end, lines in cues])
    assert cues[0][1] == 0.0


def test_cues_are_a_few_seconds_and_at_most_two_short_lines() -> None:
    cues = subtitles.build_cues(operation(long_speech(100)))
    for cue in cues:
        assert cue.end - cue.start <= subtitles.MAX_CUE_SECONDS
        assert len(cue.lines) <= 2
        assert all(len(line) <= subtitles.LINE_CHARACTERS for line in cue.lines)
    words = " ".join(" ".join(cue.lines) for cue in cues).split()
    assert words == [f"word{i}" for i in range(100)]  # nothing lost or repeated


def test_vtt_has_the_header_and_dot_milliseconds() -> None:
    text = subtitles.render_vtt(operation(long_speech(10)))
    cues = parse_vtt(text)
    assert_well_formed(cues)
    assert cues[0][2] == ["word0 word1 word2 word3 word4 word5 word6", "word7 word8 word9"]


def test_a_long_pause_starts_a_new_cue() -> None:
    cues = subtitles.build_cues(operation(chunk([word("before", 0, 0.5), word("after", 5, 5.5)])))
    assert [(cue.start, cue.lines) for cue in cues] == [(0.0, ["before"]), (5.0, ["after"])]


def test_overlapping_word_timings_never_give_overlapping_cues() -> None:
    words = [word("a" * 30, 0.0, 3.0), word("b" * 30, 1.0, 2.0), word("c" * 30, 1.5, 7.5),
             word("d" * 30, 1.5, 8.0)]  # fmt: skip
    cues = parse_srt(subtitles.render_srt(operation(chunk(words))))
    assert_well_formed([(start, end, lines) for _, start, end, lines in cues])


def test_a_word_longer_than_a_line_gets_a_line_of_its_own() -> None:
    giant = "x" * 60
    cues = subtitles.build_cues(operation(chunk([word("short", 0, 0.5), word(giant, 0.6, 1.5)])))
    assert [line for cue in cues for line in cue.lines] == ["short", giant]


def test_empty_chunks_and_no_chunks_give_no_cues() -> None:
    assert subtitles.render_srt(operation()) == ""
    assert subtitles.render_vtt(operation()) == "WEBVTT\n\n"
    empty = {"alternatives": [{"text": "", "words": []}], "channelTag": "1"}
    assert subtitles.build_cues(operation(empty)) == []


def test_two_channels_interleave_in_time_with_prefixes() -> None:
    left = chunk([word("hello", 0.0, 0.5), word("there", 0.6, 1.0)], "1")
    right = chunk([word("hi", 1.2, 1.5)], "2")
    left_again = chunk([word("bye", 3.0, 3.4)], "1")
    cues = subtitles.build_cues(operation(left, right, left_again))
    assert [cue.lines[0] for cue in cues] == [
        "[channel 1] hello there", "[channel 2] hi", "[channel 1] bye",
    ]  # fmt: skip


def test_channels_talking_at_once_are_trimmed_not_overlapping() -> None:
    left = long_speech(12, "1")
    right = long_speech(12, "2", offset=0.2)
    cues = parse_vtt(subtitles.render_vtt(operation(left, right)))
    assert_well_formed(cues)
    assert {lines[0].split("]")[0] for _, _, lines in cues} == {"[channel 1", "[channel 2"}


def test_identical_start_times_still_get_distinct_cues() -> None:
    left = chunk([word("left", 1.0, 2.0)], "1")
    right = chunk([word("right", 1.0, 2.0)], "2")
    cues = subtitles.build_cues(operation(left, right))
    assert len(cues) == 2
    assert cues[1].start >= cues[0].end > cues[0].start


def test_without_word_timings_one_cue_per_chunk() -> None:
    plain = {
        "alternatives": [{"text": "no timings here at all", "confidence": 1}],
        "channelTag": "1",
    }
    other = {"alternatives": [{"text": "second chunk", "confidence": 1}], "channelTag": "1"}
    cues = parse_srt(subtitles.render_srt(operation(plain, other)))
    assert [lines for *_, lines in cues] == [["no timings here at all"], ["second chunk"]]
    assert cues[1][1] >= cues[0][2]


def test_timestamps_over_an_hour() -> None:
    late = chunk([word("late", 3723.25, 3724.5)])
    assert "01:02:03,250 --> 01:02:04,500" in subtitles.render_srt(operation(late))
