"""The conversion to Ogg Opus: its pure decisions (rate, channels, carried tags), the 4 h limit
applied while decoding, and the Opus framing."""

from __future__ import annotations

from pathlib import Path

import av
import pytest

from daemon.audio import convert
from daemon.audio.oggopus import AudioRefused
from tests.fixtures_audio import fixture_path


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


def test_a_recording_over_the_limit_is_refused_once_the_decoded_audio_passes_it(
    tmp_path: Path,
) -> None:
    target = tmp_path / "call.ogg"
    # 2.45 s on each of two channels is 4.9 s counted together: over a 4 s limit.
    with pytest.raises(AudioRefused) as refused:
        convert.convert(formats("call_stereo.wav"), target, max_audio_seconds=4.0)
    assert refused.value.code == "too_long"
    assert "lasts at least" in refused.value.reason
    assert "on each of 2 channels" in refused.value.reason
    # It stopped there: what was written is short of the whole recording.
    assert opus_seconds(target) < 2.2

    done = convert.convert(formats("call_stereo.wav"), target, max_audio_seconds=5.0)
    assert done.channels == 2
    assert opus_seconds(target) == pytest.approx(2.45, abs=0.1)


def test_opus_is_written_in_60_ms_frames_at_the_speech_rate(tmp_path: Path) -> None:
    target = tmp_path / "memo.ogg"
    done = convert.convert(formats("mono.flac"), target)
    assert (done.channels, done.sample_rate) == (1, 8_000)  # an 8 kHz FLAC keeps its rate
    with av.open(str(target)) as written:
        stream = written.streams.audio[0]
        durations = {
            float(packet.duration * packet.time_base)
            for packet in written.demux(stream)
            if packet.duration
        }
    assert 0.06 in durations
    assert max(durations) == 0.06


def formats(name: str) -> Path:
    return fixture_path("formats") / name


def opus_seconds(path: Path) -> float:
    """What an Ogg Opus file holds, as FFmpeg decodes it (partial files included)."""
    with av.open(str(path)) as written:
        return sum(frame.samples / frame.sample_rate for frame in written.decode(audio=0))
