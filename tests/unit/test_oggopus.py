"""The local pre-upload check: real encoder output accepted, every kind of bad file refused."""

from __future__ import annotations

import dataclasses
import os
import random
import struct
from collections.abc import Callable
from pathlib import Path

import pytest

from daemon.audio import oggopus
from daemon.audio.oggopus import AudioInfo, AudioRefused, inspect_bytes, inspect_file
from tests import fixtures_audio
from tests.fixtures_audio import fixture_path, read_fixture

# Input lengths measured with `soxi -D` when the fixtures were made (tests/data/README.md).
MEASURED_SECONDS = {
    "mono.ogg": 3.972,
    "stereo.ogg": 2.451,
    "unicode.ogg": 1.998,
    "silence.ogg": 1.000,
}
DURATION_TOLERANCE_SECONDS = 0.1
OPUSENC_PRE_SKIP = 312  # what opusenc 0.2 / libopus 1.3.1 writes; a granule rewrite needs it

MONO_TRANSCRIPT = "Hello from the watch folder. This is a test recording."
STEREO_LEFT = "The left channel says good morning."
STEREO_RIGHT = "The right channel answers good evening."
RUSSIAN_TRANSCRIPT = "Привет, это проверка."


def refusal(inspect: Callable[[], AudioInfo], code: str, *words: str) -> str:
    """Assert the check refuses with `code` and a readable sentence naming the problem."""
    with pytest.raises(AudioRefused) as caught:
        inspect()
    refused = caught.value
    assert refused.code == code, refused.reason
    reason = refused.reason
    assert str(refused) == reason
    assert reason[:1].isupper(), reason
    assert reason.endswith("."), reason
    assert "\n" not in reason
    assert len(reason) < 240, reason
    for word in words:
        assert word.lower() in reason.lower(), (word, reason)
    return reason


def refused_bytes(
    data: bytes,
    code: str,
    *words: str,
    max_bytes: int = oggopus.MAX_FILE_BYTES,
    max_audio_seconds: float = oggopus.MAX_AUDIO_SECONDS,
) -> str:
    return refusal(
        lambda: inspect_bytes(data, max_bytes=max_bytes, max_audio_seconds=max_audio_seconds),
        code,
        *words,
    )


def granule_for(seconds: float) -> int:
    return OPUSENC_PRE_SKIP + round(seconds * oggopus.OPUS_GRANULE_RATE)


# ---------------------------------------------------------------------------- good files


def test_mono_fixture_is_accepted_with_its_facts() -> None:
    info = inspect_file(fixture_path("mono.ogg"))

    assert info.channels == 1
    assert info.duration_seconds == pytest.approx(
        MEASURED_SECONDS["mono.ogg"], abs=DURATION_TOLERANCE_SECONDS
    )
    assert info.comments["TRANSCRIPT"] == MONO_TRANSCRIPT
    assert "TRANSCRIPT_CH2" not in info.comments
    assert info.complete is True
    assert info.size == fixture_path("mono.ogg").stat().st_size
    assert info.pre_skip == OPUSENC_PRE_SKIP
    assert info.input_sample_rate == 16_000
    assert info.vendor.startswith("libopus")


def test_stereo_fixture_has_a_transcript_per_channel() -> None:
    info = inspect_file(fixture_path("stereo.ogg"))

    assert info.channels == 2
    assert info.duration_seconds == pytest.approx(
        MEASURED_SECONDS["stereo.ogg"], abs=DURATION_TOLERANCE_SECONDS
    )
    assert info.comments["TRANSCRIPT"] == STEREO_LEFT
    assert info.comments["TRANSCRIPT_CH2"] == STEREO_RIGHT
    assert info.input_sample_rate == 48_000
    assert info.complete is True


def test_russian_transcript_comment_survives_as_unicode() -> None:
    info = inspect_file(fixture_path("unicode.ogg"))

    assert info.channels == 1
    assert info.comments["TRANSCRIPT"] == RUSSIAN_TRANSCRIPT
    assert info.duration_seconds == pytest.approx(
        MEASURED_SECONDS["unicode.ogg"], abs=DURATION_TOLERANCE_SECONDS
    )


def test_silence_is_audio_without_a_transcript() -> None:
    info = inspect_file(fixture_path("silence.ogg"))

    assert info.duration_seconds == pytest.approx(1.0, abs=DURATION_TOLERANCE_SECONDS)
    assert "TRANSCRIPT" not in info.comments
    assert info.comments["ENCODER"].startswith("opusenc")


@pytest.mark.parametrize(
    ("name", "channels"), [("greeting.ogg", 1), ("privet.ogg", 1), ("call-stereo.ogg", 2)]
)
def test_demo_samples_are_accepted_and_carry_no_transcript(name: str, channels: int) -> None:
    """The demo recognises real speech: a stored transcript would let the echo engine cheat."""
    path = Path(__file__).parents[2] / "samples" / name
    info = inspect_file(path)

    assert info.channels == channels
    assert not [key for key in info.comments if key.startswith("TRANSCRIPT")]
    assert info.complete is True


@pytest.mark.parametrize("name", ["mono.ogg", "stereo.ogg", "unicode.ogg", "silence.ogg"])
def test_inspect_bytes_agrees_with_inspect_file(name: str) -> None:
    assert inspect_bytes(read_fixture(name)) == inspect_file(fixture_path(name))


@pytest.mark.parametrize(
    "name", ["sample.wav", "vorbis.ogg", "three_channels.ogg", "flac.oga", "speex.ogg"]
)
def test_inspect_bytes_refuses_like_inspect_file(name: str) -> None:
    with pytest.raises(AudioRefused) as from_file:
        inspect_file(fixture_path(name))
    with pytest.raises(AudioRefused) as from_bytes:
        inspect_bytes(read_fixture(name))
    assert (from_bytes.value.code, from_bytes.value.reason) == (
        from_file.value.code,
        from_file.value.reason,
    )


def test_a_missing_file_raises_os_error_not_a_refusal(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        inspect_file(tmp_path / "gone.ogg")


# ---------------------------------------------------------------------------- not Ogg Opus


def test_empty_file_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty.ogg"
    empty.write_bytes(b"")

    refusal(lambda: inspect_file(empty), "empty", "empty")
    refused_bytes(b"", "empty", "empty")


def test_wav_renamed_to_ogg_is_refused_as_wav(tmp_path: Path) -> None:
    renamed = tmp_path / "recording.ogg"
    renamed.write_bytes(read_fixture("sample.wav"))

    refusal(lambda: inspect_file(renamed), "not_ogg", "WAV")


@pytest.mark.parametrize(
    ("head", "looks_like"),
    [
        (b"ID3\x04\x00\x00\x00\x00\x00\x00", "MP3"),
        (b"\xff\xfb\x90\x64" + bytes(60), "MP3"),
        (b"fLaC\x00\x00\x00\x22" + bytes(60), "FLAC"),
        (b"\x00\x00\x00\x20ftypM4A " + bytes(60), "MP4"),
    ],
)
def test_other_formats_are_named(head: bytes, looks_like: str) -> None:
    refused_bytes(head, "not_ogg", looks_like)


def test_random_bytes_are_not_ogg() -> None:
    noise = random.Random(7).randbytes(4096)

    reason = refused_bytes(noise, "not_ogg", "OggS")
    assert "not recognised" in reason


@pytest.mark.parametrize(
    ("name", "codec"),
    [("vorbis.ogg", "Vorbis"), ("flac.oga", "FLAC"), ("speex.ogg", "Speex")],
)
def test_other_ogg_codecs_are_refused_by_name(name: str, codec: str) -> None:
    refusal(lambda: inspect_file(fixture_path(name)), "not_opus", codec, "not Opus")


def test_unknown_codec_in_ogg_is_refused() -> None:
    mono = read_fixture("mono.ogg")
    mystery = fixtures_audio.patch_page(mono, 0, 0, b"MysteryC")

    refused_bytes(mystery, "not_opus", "unknown codec")


def test_future_major_opus_version_is_refused() -> None:
    mono = read_fixture("mono.ogg")
    version_one = fixtures_audio.patch_page(mono, 0, 8, bytes([0x10]))

    refused_bytes(version_one, "not_opus", "version 1.0")


def test_minor_opus_version_bump_is_accepted() -> None:
    mono = read_fixture("mono.ogg")
    version_0_15 = fixtures_audio.patch_page(mono, 0, 8, bytes([0x0F]))

    assert inspect_bytes(version_0_15).channels == 1


# ---------------------------------------------------------------------------- truncation


def _cut_points() -> dict[str, int]:
    mono = read_fixture("mono.ogg")
    page_list = fixtures_audio.pages(mono)
    first, tags, middle, last = page_list[0], page_list[1], page_list[2], page_list[-1]
    return {
        "inside the capture pattern": 3,
        "inside the first page header": 20,
        "inside the OpusHead segment table": first.offset + 27,
        "inside the OpusHead body": first.end - 5,
        "inside the OpusTags page header": tags.offset + 10,
        "inside the OpusTags body": tags.end - 1,
        "inside an audio page body": middle.body_offset + middle.body_bytes // 2,
        "inside the last page header": last.offset + 12,
        "one byte short": len(mono) - 1,
    }


@pytest.mark.parametrize("where", list(_cut_points()))
def test_truncated_cut_points_are_refused(where: str) -> None:
    keep = _cut_points()[where]

    refused_bytes(read_fixture("mono.ogg")[:keep], "truncated", "truncated")


def test_truncate_helper_cut_mid_body_is_refused(tmp_path: Path) -> None:
    cut = tmp_path / "cut.ogg"
    cut.write_bytes(fixtures_audio.truncate(read_fixture("stereo.ogg"), 700))

    refusal(lambda: inspect_file(cut), "truncated", "truncated", "byte")


def test_cut_at_a_page_boundary_is_accepted_but_incomplete() -> None:
    """A writer still at work: every page whole, no end-of-stream flag yet."""
    mono = read_fixture("mono.ogg")
    last = fixtures_audio.pages(mono)[-1]

    info = inspect_bytes(mono[: last.offset])

    assert info.complete is False
    assert 0 < info.duration_seconds < MEASURED_SECONDS["mono.ogg"] - 0.5


def test_file_ending_before_opus_tags_is_truncated() -> None:
    mono = read_fixture("mono.ogg")
    first = fixtures_audio.pages(mono)[0]

    refused_bytes(mono[: first.end], "truncated", "OpusTags")


def test_header_pages_only_hold_no_audio() -> None:
    mono = read_fixture("mono.ogg")
    tags = fixtures_audio.pages(mono)[1]

    refused_bytes(mono[: tags.end], "no_audio", "no audio")


def test_partial_page_appended_is_truncated() -> None:
    mono = read_fixture("mono.ogg")

    refused_bytes(mono + b"OggS\x00", "truncated", "truncated")


# ---------------------------------------------------------------------------- corruption


@pytest.mark.parametrize(("page_index", "what"), [(0, "Ogg header page"), (1, "Ogg header page")])
def test_corrupt_header_pages_fail_their_crc(page_index: int, what: str) -> None:
    mono = read_fixture("mono.ogg")
    offset = fixtures_audio.page_offsets(mono)[page_index]

    refused_bytes(
        fixtures_audio.corrupt_page(mono, page_index), "corrupt", "CRC", what, f"byte {offset}"
    )


def test_corrupt_last_page_fails_its_crc() -> None:
    stereo = read_fixture("stereo.ogg")
    offset = fixtures_audio.page_offsets(stereo)[-1]

    refused_bytes(
        fixtures_audio.corrupt_page(stereo, -1), "corrupt", "CRC", "last Ogg page", f"byte {offset}"
    )


def test_broken_page_chain_in_the_middle_names_the_offset(tmp_path: Path) -> None:
    mono = read_fixture("mono.ogg")
    offset = fixtures_audio.page_offsets(mono)[3]
    damaged = tmp_path / "damaged.ogg"
    damaged.write_bytes(fixtures_audio.break_page_chain(mono, 3))

    refusal(lambda: inspect_file(damaged), "corrupt", "corrupt", f"byte {offset}")


def test_misplaced_page_after_a_bad_segment_table_is_corrupt() -> None:
    mono = read_fixture("mono.ogg")
    next_page_offset = fixtures_audio.page_offsets(mono)[3]

    refused_bytes(
        fixtures_audio.grow_first_segment(mono, 2),
        "corrupt",
        f"byte {next_page_offset + 1}",
    )


def test_missing_page_in_the_middle_is_corrupt() -> None:
    mono = read_fixture("mono.ogg")

    refused_bytes(fixtures_audio.remove_page(mono, 2), "corrupt", "missing")


def test_trailing_garbage_is_corrupt() -> None:
    mono = read_fixture("mono.ogg")

    refused_bytes(mono + b"this is not a page", "corrupt", f"byte {len(mono)}")


def test_first_page_without_begin_of_stream_flag_is_corrupt() -> None:
    mono = read_fixture("mono.ogg")

    refused_bytes(fixtures_audio.set_header_flags(mono, 0, 0x00), "corrupt", "beginning")


def test_zero_channels_is_corrupt() -> None:
    mono = read_fixture("mono.ogg")

    refused_bytes(fixtures_audio.set_channel_count(mono, 0), "corrupt", "0 channels")


@pytest.mark.parametrize(("field", "value"), [(4, 1), (5, 0x08)], ids=["version", "flags"])
def test_invalid_page_header_in_the_middle_is_corrupt(field: int, value: int) -> None:
    mono = read_fixture("mono.ogg")
    page = fixtures_audio.pages(mono)[3]
    damaged = bytearray(mono)
    damaged[page.offset + field] = value

    refused_bytes(bytes(damaged), "corrupt", "invalid header", f"byte {page.offset}")


def test_tags_page_claiming_a_continued_packet_is_corrupt() -> None:
    mono = read_fixture("mono.ogg")

    refused_bytes(fixtures_audio.set_header_flags(mono, 1, 0x01), "corrupt", "continued packet")


def test_mapping_family_without_its_table_is_corrupt() -> None:
    mono = read_fixture("mono.ogg")

    refused_bytes(fixtures_audio.patch_page(mono, 0, 18, bytes([1])), "corrupt", "mapping")


def test_second_packet_that_is_not_opus_tags_is_corrupt() -> None:
    mono = read_fixture("mono.ogg")

    refused_bytes(fixtures_audio.patch_page(mono, 1, 0, b"NotTags!"), "corrupt", "OpusTags")


# ---------------------------------------------------------------------------- service limits


def test_three_channels_are_refused() -> None:
    refusal(
        lambda: inspect_file(fixture_path("three_channels.ogg")),
        "too_many_channels",
        "3 channels",
        "at most 2",
    )


def test_channel_limit_is_a_parameter() -> None:
    refusal(
        lambda: inspect_file(fixture_path("stereo.ogg"), max_channels=1),
        "too_many_channels",
        "2 channels",
        "at most 1",
    )


def test_three_channels_pass_when_the_limit_allows() -> None:
    info = inspect_file(fixture_path("three_channels.ogg"), max_channels=3)

    assert info.channels == 3
    assert info.comments["TRANSCRIPT_CH3"] == "Three."


def test_rewritten_channel_count_is_seen() -> None:
    mono = read_fixture("mono.ogg")

    refused_bytes(fixtures_audio.set_channel_count(mono, 3), "too_many_channels", "3 channels")


def test_mono_over_four_hours_is_refused() -> None:
    long_mono = fixtures_audio.set_last_granule(
        read_fixture("mono.ogg"), granule_for(4 * 3600 + 60)
    )

    reason = refused_bytes(long_mono, "too_long", "lasts 4 h 01 min", "4 h limit")
    assert "at least" not in reason


def test_stereo_over_two_hours_is_refused_as_all_channels_count() -> None:
    long_stereo = fixtures_audio.set_last_granule(
        read_fixture("stereo.ogg"), granule_for(2 * 3600 + 60)
    )

    refused_bytes(long_stereo, "too_long", "2 h 01 min", "2 channels", "4 h 02 min")


def test_mono_just_under_four_hours_is_accepted() -> None:
    granule = granule_for(3 * 3600 + 59 * 60)
    long_mono = fixtures_audio.set_last_granule(read_fixture("mono.ogg"), granule)

    info = inspect_bytes(long_mono)

    assert info.duration_seconds == pytest.approx(3 * 3600 + 59 * 60)
    assert info.complete is True


def test_exactly_four_hours_of_mono_is_accepted() -> None:
    long_mono = fixtures_audio.set_last_granule(read_fixture("mono.ogg"), granule_for(4 * 3600))

    assert inspect_bytes(long_mono).duration_seconds == pytest.approx(4 * 3600)


def test_a_huge_granule_early_in_the_file_stops_the_walk() -> None:
    huge_middle = fixtures_audio.set_page_granule(
        read_fixture("mono.ogg"), 2, granule_for(5 * 3600)
    )

    refused_bytes(huge_middle, "too_long", "lasts at least 5 h")


def test_duration_limit_is_a_parameter() -> None:
    refused_bytes(read_fixture("mono.ogg"), "too_long", "limit", max_audio_seconds=2.0)


@pytest.mark.parametrize("granule", [OPUSENC_PRE_SKIP, 0, OPUSENC_PRE_SKIP - 100])
def test_zero_or_negative_duration_is_no_audio(granule: int) -> None:
    empty_audio = fixtures_audio.set_last_granule(read_fixture("mono.ogg"), granule)

    refused_bytes(empty_audio, "no_audio", "no audio", "pre-skip")


def test_file_over_one_gibibyte_is_refused_from_its_size(tmp_path: Path) -> None:
    """Sparse file: a valid head, then zeros up to 1 GiB + 1.

    Were the check to read past the head it would meet the zeros and call the file corrupt;
    only a decision taken from the size alone gives too_large.
    """
    huge = tmp_path / "huge.ogg"
    huge.write_bytes(read_fixture("mono.ogg"))
    os.truncate(huge, oggopus.MAX_FILE_BYTES + 1)

    refusal(lambda: inspect_file(huge), "too_large", "1 GiB limit")


def test_size_limit_is_a_parameter() -> None:
    mono = read_fixture("mono.ogg")

    assert inspect_bytes(mono, max_bytes=len(mono)).size == len(mono)
    refused_bytes(mono, "too_large", f"{len(mono)} bytes", max_bytes=len(mono) - 1)


# ---------------------------------------------------------------------------- comments


def test_comment_keys_are_upper_cased_and_the_first_value_wins() -> None:
    tags = fixtures_audio.opus_tags_packet(
        "test vendor",
        [
            b"transcript=first",
            b"TRANSCRIPT=second",
            b"no separator here",
            b"Title=caf\xc3\xa9",
            b"BROKEN=\xff\xfe",
        ],
    )
    info = inspect_bytes(fixtures_audio.replace_tags(read_fixture("mono.ogg"), tags))

    assert info.vendor == "test vendor"
    assert info.comments["TRANSCRIPT"] == "first"
    assert info.comments["TITLE"] == "café"
    assert info.comments["BROKEN"] == "\ufffd\ufffd"
    assert len(info.comments) == 3


def test_tags_spanning_pages_and_past_the_cap_keep_the_text_comments() -> None:
    """Cover art can make OpusTags megabytes long; the transcript before it must survive."""
    picture = b"METADATA_BLOCK_PICTURE=" + b"A" * (oggopus.MAX_TAGS_BYTES + 300_000)
    tags = fixtures_audio.opus_tags_packet(
        "v", [b"TRANSCRIPT=" + MONO_TRANSCRIPT.encode(), picture, b"AFTER=cut off"]
    )
    mono = read_fixture("mono.ogg")
    big = fixtures_audio.replace_tags(mono, tags)
    assert len(fixtures_audio.pages(big)) > len(fixtures_audio.pages(mono)) + 15

    info = inspect_bytes(big)

    assert info.comments["TRANSCRIPT"] == MONO_TRANSCRIPT
    assert "AFTER" not in info.comments
    assert info.duration_seconds == pytest.approx(MEASURED_SECONDS["mono.ogg"], abs=0.1)


def test_tags_spanning_a_few_pages_are_read_whole() -> None:
    long_text = "x" * 100_000
    tags = fixtures_audio.opus_tags_packet("v", [b"NOTE=" + long_text.encode(), b"END=yes"])

    info = inspect_bytes(fixtures_audio.replace_tags(read_fixture("mono.ogg"), tags))

    assert info.comments["NOTE"] == long_text
    assert info.comments["END"] == "yes"


# ---------------------------------------------------------------------------- other streams


def test_pages_of_another_logical_stream_are_ignored() -> None:
    mono = read_fixture("mono.ogg")
    offsets = fixtures_audio.page_offsets(mono)
    foreign = fixtures_audio.make_page(
        serial=4242, sequence=0, granule=123, flags=0x02, lacing=[4], body=b"data"
    )
    multiplexed = mono[: offsets[3]] + foreign + mono[offsets[3] :]

    assert inspect_bytes(multiplexed) == dataclasses.replace(
        inspect_bytes(mono), size=len(multiplexed)
    )


def test_other_stream_as_the_last_page_is_still_crc_checked() -> None:
    mono = read_fixture("mono.ogg")
    foreign = bytearray(
        fixtures_audio.make_page(
            serial=4242, sequence=0, granule=0, flags=0x06, lacing=[4], body=b"data"
        )
    )
    foreign[-1] ^= 0xFF

    refused_bytes(mono + bytes(foreign), "corrupt", "CRC", f"byte {len(mono)}")


def test_ogg_crc_matches_the_encoder() -> None:
    mono = read_fixture("mono.ogg")
    for page in fixtures_audio.pages(mono):
        data = mono[page.offset : page.end]
        (stored,) = struct.unpack_from("<I", data, 22)
        assert oggopus.page_crc(data) == stored


def test_last_opus_page_is_crc_checked_when_another_stream_ends_the_file() -> None:
    mono = read_fixture("mono.ogg")
    last_opus_offset = fixtures_audio.page_offsets(mono)[-1]
    foreign = fixtures_audio.make_page(
        serial=4242, sequence=0, granule=0, flags=0x06, lacing=[4], body=b"data"
    )

    refused_bytes(
        fixtures_audio.corrupt_page(mono, -1) + foreign,
        "corrupt",
        "CRC",
        "last Opus page",
        f"byte {last_opus_offset}",
    )
