"""The pure decisions of the conversion to Ogg Opus: rate, channels, carried tags."""

from __future__ import annotations

from daemon.audio import convert


def test_speech_rate_never_upsamples_a_telephone_call() -> None:
    assert convert.output_rate(8_000) == 8_000
    assert convert.output_rate(11_025) == 12_000
    assert convert.output_rate(16_000) == 16_000
    assert convert.output_rate(44_100) == 16_000
    assert convert.output_rate(48_000) == 16_000


def test_one_or_two_channels_are_kept_and_more_are_mixed_down_to_mono() -> None:
    assert [convert.output_channels(count) for count in (1, 2, 3, 6)] == [1, 2, 1, 1]


def test_transcript_tags_are_carried_upper_cased_and_the_stream_wins() -> None:
    stream = {"transcript": "from the stream"}
    container = {"TRANSCRIPT": "from the container", "TRANSCRIPT_CH2": "two", "title": "x"}
    assert convert.carried_tags(stream, container) == {
        "TRANSCRIPT": "from the stream",
        "TRANSCRIPT_CH2": "two",
    }
