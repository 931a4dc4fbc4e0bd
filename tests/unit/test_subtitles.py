"""The cue builder and the SubRip / WebVTT writers."""

from __future__ import annotations

import itertools
import re
from typing import Any

import pytest

from daemon.render import subtitles, transcripts
from speechkit_local import logic

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


# ---------------------------------------------------------------------------- text from the chunk


def literary(text: str, words: list[dict[str, Any]], tag: str = "1") -> dict[str, Any]:
    """A chunk as literature_text may give it: normalised text, raw words."""
    return {"alternatives": [{"text": text, "words": words, "confidence": 1}], "channelTag": tag}


def cue_text(cues: list[subtitles.Cue]) -> str:
    return " ".join(" ".join(cue.lines) for cue in cues)


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("Hello, world.", ["Hello,", "world."]),
        ("Wait — what?", ["Wait —", "what?"]),
        ("« Да », сказал он.", ["« Да »,", "сказал", "он."]),
        ("— Bye.", ["— Bye."]),
        ("?!", ["?!"]),
        ("", []),
    ],
)
def test_text_tokens_are_spoken_words_with_lone_punctuation_attached(
    text: str, tokens: list[str]
) -> None:
    assert subtitles.text_tokens(text) == tokens


def test_literature_text_with_raw_words_reads_like_the_text() -> None:
    raw = [word("hello", 0.0, 0.4), word("world", 0.5, 0.9), word("how", 3.0, 3.2),
           word("are", 3.3, 3.4), word("you", 3.5, 3.8)]  # fmt: skip
    cues = subtitles.build_cues(operation(literary("Hello, world. How are you?", raw)))
    # Same count of tokens and words: each token takes its word's times, so the pause still
    # splits the cue where it was spoken.
    assert [(cue.start, cue.end, cue.lines) for cue in cues] == [
        (0.0, 0.9, ["Hello, world."]),
        (3.0, 3.8, ["How are you?"]),
    ]


def test_a_lone_dash_rides_with_its_word_and_keeps_the_word_timings() -> None:
    raw = [word("wait", 1.0, 1.5), word("what", 4.0, 4.5)]
    cues = subtitles.build_cues(operation(literary("Wait — what?", raw)))
    assert [(cue.start, cue.lines) for cue in cues] == [(1.0, ["Wait —"]), (4.0, ["what?"])]


def test_fewer_tokens_than_words_are_timed_within_the_chunk_span() -> None:
    raw = [word("i", 10.0, 10.2), word("am", 10.3, 10.5), word("twenty", 10.6, 11.0),
           word("five", 11.1, 11.6)]  # fmt: skip
    chunk_25 = literary("I am 25.", raw)
    tokens = subtitles.timed_tokens(chunk_25)
    assert [token.text for token in tokens] == ["I", "am", "25."]
    assert tokens[0].start == 10.0
    assert tokens[-1].end == pytest.approx(11.6)
    for before, after in itertools.pairwise(tokens):
        assert before.end == pytest.approx(after.start)  # one after another, in written order
    # In proportion to length: "25." (3 characters) lasts three times as long as "I".
    assert tokens[2].end - tokens[2].start == pytest.approx(3 * (tokens[0].end - tokens[0].start))
    cues = subtitles.build_cues(operation(chunk_25))
    assert [(cue.start, cue.end, cue.lines) for cue in cues] == [(10.0, 11.6, ["I am 25."])]


def test_more_tokens_than_words_still_show_every_token_within_the_span() -> None:
    raw = [word("covid", 2.0, 2.5), word("nineteen", 2.6, 3.2)]
    tokens = subtitles.timed_tokens(literary("It is COVID-19, they said.", raw))
    assert [token.text for token in tokens] == ["It", "is", "COVID-19,", "they", "said."]
    assert tokens[0].start == 2.0
    assert tokens[-1].end == pytest.approx(3.2)


def test_a_long_mismatched_chunk_still_gets_short_cues_with_nothing_lost() -> None:
    text = " ".join(f"Sentence {number}, with several words in it." for number in range(12))
    raw = [word(f"w{i}", i * 0.4, i * 0.4 + 0.35) for i in range(90)]  # more words than tokens
    cues = subtitles.build_cues(operation(literary(text, raw)))
    assert cue_text(cues) == text
    assert len(cues) > 3
    assert cues[0].start == 0.0
    assert cues[-1].end == pytest.approx(89 * 0.4 + 0.35)
    for cue in cues:
        assert cue.end - cue.start <= subtitles.MAX_CUE_SECONDS
        assert len(cue.lines) <= subtitles.MAX_LINES
        assert all(len(line) <= subtitles.LINE_CHARACTERS for line in cue.lines)


def test_tokens_keep_the_written_order_when_word_times_go_backwards() -> None:
    raw = [word("first", 1.0, 1.4), word("second", 0.9, 1.5)]
    cues = subtitles.build_cues(operation(literary("First, second.", raw)))
    assert [(cue.start, cue.end, cue.lines) for cue in cues] == [(0.9, 1.5, ["First, second."])]


def test_two_channels_with_literature_text_keep_prefixes_and_the_text() -> None:
    left = literary("Good morning!", [word("good", 0.0, 0.4), word("morning", 0.5, 1.0)], "1")
    right = literary("Hi.", [word("hi", 1.2, 1.5)], "2")
    cues = subtitles.build_cues(operation(left, right))
    assert [cue.lines for cue in cues] == [["[channel 1] Good morning!"], ["[channel 2] Hi."]]


def test_a_chunk_with_words_but_no_text_falls_back_to_the_words() -> None:
    silent_text = literary("", [word("mumble", 0.0, 0.5)])
    assert [cue.lines for cue in subtitles.build_cues(operation(silent_text))] == [["mumble"]]


def by_channel(lines: list[str]) -> dict[str, str]:
    """Each channel's words, in order, from `[channel N] ` prefixed lines."""
    said: dict[str, list[str]] = {}
    for line in lines:
        tag, _, text = line.removeprefix("[channel ").partition("] ")
        said.setdefault(tag, []).append(text)
    return {tag: " ".join(" ".join(texts).split()) for tag, texts in said.items()}


@pytest.mark.parametrize("literature_text", [True, False])
def test_echo_engine_mono_subtitles_read_like_the_txt(literature_text: bool) -> None:
    said = "Hello, World! — It's 25 past. «Привет», сказал он."
    result = operation(*logic.build_echo_chunks([said], 8.0, literature_text=literature_text))
    txt = " ".join(transcripts.render_txt(result).split())
    assert txt == (said if literature_text else "hello world it's 25 past привет сказал он")
    cues = subtitles.build_cues(result)
    assert cue_text(cues) == txt
    assert len(cues) > 1  # longer than one cue may last: the text is cut, not lost


@pytest.mark.parametrize("literature_text", [True, False])
def test_echo_engine_stereo_subtitles_read_like_the_txt(literature_text: bool) -> None:
    said = ["The left channel says: good morning!", "And the right — good evening."]
    result = operation(*logic.build_echo_chunks(said, 3.0, literature_text=literature_text))
    txt = by_channel(transcripts.render_txt(result).splitlines())
    cues = subtitles.build_cues(result)
    assert by_channel([" ".join(cue.lines) for cue in cues]) == txt
    if literature_text:
        assert txt == {"1": said[0], "2": said[1]}


def test_a_cue_stays_readable_when_the_other_channel_starts_at_once() -> None:
    left = chunk([word("good", 0.0, 0.4), word("morning", 0.5, 2.0)], "1")
    right = chunk([word("hello", 0.1, 0.6), word("there", 0.7, 1.8)], "2")
    cues = subtitles.build_cues(operation(right, left))
    assert [cue.lines[0] for cue in cues] == ["[channel 1] good morning", "[channel 2] hello there"]
    assert cues[0].end - cues[0].start >= subtitles.MIN_READABLE_SECONDS
    assert cues[1].start >= cues[0].end
    assert cues[1].end - cues[1].start >= subtitles.MIN_READABLE_SECONDS
    tie = subtitles.build_cues(
        operation(chunk([word("b", 1.0, 2.0)], "2"), chunk([word("a", 1.0, 2.0)], "1"))
    )
    assert [cue.lines[0] for cue in tie] == ["[channel 1] a", "[channel 2] b"]
