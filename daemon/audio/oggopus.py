"""Local check of an audio file before upload: is it Ogg Opus that SpeechKit will accept?

SpeechKit's asynchronous recognition takes Ogg Opus (RFC 7845 inside RFC 3533 Ogg pages) of at
most 1 GB, at most 2 channels and at most 4 h of audio counting all channels together. Uploading a
file that breaks one of these rules costs an upload, a submission from the hourly quota and a
confusing error later, so the daemon checks it here first, cheaply:

* the size comes from ``fstat`` before anything is read;
* the head pages (``OpusHead``, ``OpusTags``) are read in full and their CRCs verified;
* the rest of the file is walked page by page reading only each page's header and segment table
  and seeking over the bodies, which finds truncation and broken page chains without reading the
  audio; a body byte flipped in a middle page is not detected (that would need reading it all);
* the last page's CRC is verified and its granule position gives the duration.

Everything here is pure apart from reading the one file it is given: no logging, no other I/O.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from dataclasses import dataclass
from typing import BinaryIO, NamedTuple

from daemon import logs

MAX_FILE_BYTES = 1024**3  # service limit: 1 GB per object
MAX_AUDIO_SECONDS = 4 * 3600  # service limit: 4 h counting all channels together
MAX_CHANNELS = 2  # async recognition handles at most 2 channels
OPUS_GRANULE_RATE = 48_000  # Opus granule positions always count 48 kHz samples (RFC 7845 §4)

# Comment headers carry cover art in the wild; past this much the rest is skipped, not parsed.
MAX_TAGS_BYTES = 1024**2  # 1 MiB of OpusTags is far more than any text comment needs

CAPTURE_PATTERN = b"OggS"
PAGE_HEADER_BYTES = 27  # fixed part of an Ogg page header (RFC 3533 §6)
MAX_SEGMENTS = 255  # the segment count is one byte
# One read fetches the fixed header and the longest possible segment table.
PAGE_PREFIX_BYTES = PAGE_HEADER_BYTES + MAX_SEGMENTS
# Page headers are read through a window: one read covers many small pages (a writer that puts
# each 20 ms packet on its own page makes ~700,000 pages for 4 h), while pages bigger than a
# quarter of it are reached by seeking and reading only their header, not their audio.
READ_WINDOW_BYTES = 64 * 1024

FLAG_CONTINUED = 0x01  # first packet on the page continues one from the previous page
FLAG_BEGIN_OF_STREAM = 0x02
FLAG_END_OF_STREAM = 0x04
KNOWN_FLAGS = FLAG_CONTINUED | FLAG_BEGIN_OF_STREAM | FLAG_END_OF_STREAM

NO_GRANULE = -1  # a page on which no packet ends carries granule position -1

OPUS_HEAD_MAGIC = b"OpusHead"
OPUS_TAGS_MAGIC = b"OpusTags"
OPUS_HEAD_MIN_BYTES = 19  # magic 8, version 1, channels 1, pre-skip 2, rate 4, gain 2, family 1

# Page header fields after the capture pattern: version, flags, granule (signed), serial,
# sequence, CRC, segment count.
_PAGE_HEADER = struct.Struct("<4sBBqIIIB")
_CRC_FIELD = slice(22, 26)

# Codec identification packets of other Ogg mappings, to name what was found instead of Opus.
_OTHER_OGG_CODECS = (
    (b"\x01vorbis", "Vorbis"),
    (b"\x7fFLAC", "FLAC"),
    (b"fLaC", "FLAC"),
    (b"Speex   ", "Speex"),
    (b"\x80theora", "Theora video"),
    (b"fishead\x00", "an Ogg Skeleton index"),
    (b"PCM     ", "raw PCM"),
    (b"CELT    ", "CELT"),
    (b"\x80kate\x00\x00\x00", "Kate subtitles"),
    (b"\x01video\x00\x00\x00", "OGM video"),
)


class AudioRefused(Exception):  # noqa: N818 - the name is the public interface others call
    """The file is not acceptable audio.

    ``reason`` is a short human sentence naming the problem, ``code`` a stable machine token:
    empty, too_large, not_ogg, not_opus, truncated, corrupt, too_many_channels, too_long, no_audio.
    """

    code: str
    reason: str

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class AudioInfo:
    """What the check learnt about an accepted Ogg Opus file."""

    size: int  # bytes
    channels: int
    pre_skip: int
    input_sample_rate: int
    duration_seconds: float  # (last granule of the Opus stream - pre_skip) / 48000
    comments: dict[str, str]  # Opus comment fields, keys upper-cased, first value wins
    vendor: str
    complete: bool  # last page has the end-of-stream flag (0x04); some writers omit it


# Ogg's CRC is zlib's CRC-32 polynomial, but neither reflected nor inverted: computed by zlib
# (C speed) on bit-reversed bytes, from a zero register, and the result bit-reversed back. A
# per-byte loop in Python cost more CPU than everything else the check does on a small file.
_BIT_REVERSED = bytes(int(f"{value:08b}"[::-1], 2) for value in range(256))
_ZLIB_INVERSION = 0xFFFFFFFF  # zlib inverts the register before and after


def ogg_crc32(data: bytes) -> int:
    """Ogg's page checksum: CRC-32, polynomial 0x04C11DB7, not reflected, initial value 0.

    The caller zeroes the CRC field of the page before computing it.
    """
    reflected = zlib.crc32(data.translate(_BIT_REVERSED), _ZLIB_INVERSION) ^ _ZLIB_INVERSION
    return int(f"{reflected:032b}"[::-1], 2)


def page_crc(page: bytes) -> int:
    """The CRC a whole page should carry (its own CRC field counted as zero)."""
    return ogg_crc32(page[:22] + b"\x00\x00\x00\x00" + page[26:])


class _HeadPage(NamedTuple):
    """A page of the Opus stream's header packets, as the walk found it."""

    offset: int
    flags: int
    header_bytes: int  # fixed header + segment table
    total_bytes: int  # header + body


class _WalkResult(NamedTuple):
    """What the walk leaves for the verdict: the pages whose CRC is checked, the duration."""

    last_page_offset: int
    last_page_bytes: int
    last_opus_page_offset: int
    last_opus_page_bytes: int
    last_opus_page_flags: int
    last_granule: int


class _Source:
    """Positioned reads over a seekable binary file object with a known size."""

    def __init__(self, stream: BinaryIO, size: int) -> None:
        self._stream = stream
        self.size = size

    def read_at(self, offset: int, length: int) -> bytes:
        self._stream.seek(offset)
        return self._stream.read(max(0, min(length, self.size - offset)))


def inspect_file(
    path: str | os.PathLike[str],
    *,
    max_bytes: int = MAX_FILE_BYTES,
    max_audio_seconds: float = MAX_AUDIO_SECONDS,
    max_channels: int = MAX_CHANNELS,
) -> AudioInfo:
    """Check the file at ``path`` without reading its audio; raise AudioRefused if unacceptable.

    OSError (missing file, permissions) propagates unchanged.
    """
    # Unbuffered: every read is positioned, so read-ahead would only pull audio bodies in.
    with open(path, "rb", buffering=0) as stream:
        size = os.fstat(stream.fileno()).st_size
        _check_size(size, max_bytes)
        return _inspect(
            _Source(stream, size),
            max_audio_seconds=max_audio_seconds,
            max_channels=max_channels,
        )


def inspect_bytes(
    data: bytes,
    *,
    max_bytes: int = MAX_FILE_BYTES,
    max_audio_seconds: float = MAX_AUDIO_SECONDS,
    max_channels: int = MAX_CHANNELS,
) -> AudioInfo:
    """The same check as inspect_file on audio already in memory."""
    _check_size(len(data), max_bytes)
    return _inspect(
        _Source(io.BytesIO(data), len(data)),
        max_audio_seconds=max_audio_seconds,
        max_channels=max_channels,
    )


def _check_size(size: int, max_bytes: int) -> None:
    if size == 0:
        raise AudioRefused("empty", "The file is empty (0 bytes).")
    if size > max_bytes:
        raise AudioRefused(
            "too_large",
            f"The file is {_format_bytes(size)}, over the {_format_bytes(max_bytes)} "
            "limit for one recognition.",
        )


def _inspect(source: _Source, *, max_audio_seconds: float, max_channels: int) -> AudioInfo:
    first = source.read_at(0, PAGE_PREFIX_BYTES)
    if not first.startswith(CAPTURE_PATTERN):
        if len(first) < len(CAPTURE_PATTERN) and CAPTURE_PATTERN.startswith(first):
            raise AudioRefused(
                "truncated", f"The file is truncated: it ends after {len(first)} bytes."
            )
        raise AudioRefused("not_ogg", _describe_not_ogg(first))

    walker = _StreamWalker(source, max_audio_seconds=max_audio_seconds, max_channels=max_channels)
    return walker.run()


class _StreamWalker:
    """One pass over the page chain: head packets in full, then page headers only."""

    def __init__(self, source: _Source, *, max_audio_seconds: float, max_channels: int) -> None:
        self._source = source
        self._max_audio_seconds = max_audio_seconds
        self._max_channels = max_channels
        # Head packet assembly (OpusHead, then OpusTags).
        self._partial = bytearray()
        self._partial_overflowed = False
        self._head: _OpusHead | None = None
        self._tags: tuple[str, dict[str, str]] | None = None
        # Granule past which the audio is too long; none can pass it before the head is known.
        self._granule_limit = 2**63

    def run(self) -> AudioInfo:
        walk = self._walk()
        head, tags = self._head, self._tags
        if head is None or tags is None:
            missing = "OpusHead" if head is None else "OpusTags"
            raise AudioRefused(
                "truncated",
                f"The file is truncated: the Opus stream ends before its {missing} header "
                f"(file size {self._source.size} bytes).",
            )
        self._verify_crc(walk.last_page_offset, walk.last_page_bytes, "last Ogg page")
        if walk.last_opus_page_offset != walk.last_page_offset:
            self._verify_crc(
                walk.last_opus_page_offset, walk.last_opus_page_bytes, "last Opus page"
            )

        vendor, comments = tags
        duration = (walk.last_granule - head.pre_skip) / OPUS_GRANULE_RATE
        if duration <= 0:
            raise AudioRefused(
                "no_audio",
                f"The file holds no audio: its last granule position ({walk.last_granule}) "
                f"does not pass the Opus pre-skip ({head.pre_skip} samples).",
            )
        self._check_duration(duration, head.channels, at_least=False)
        return AudioInfo(
            size=self._source.size,
            channels=head.channels,
            pre_skip=head.pre_skip,
            input_sample_rate=head.input_sample_rate,
            duration_seconds=duration,
            comments=comments,
            vendor=vendor,
            complete=bool(walk.last_opus_page_flags & FLAG_END_OF_STREAM),
        )

    # ------------------------------------------------------------------ page chain

    def _walk(self) -> _WalkResult:
        """Visit every page header once, in order; the head pages are also read in full.

        This loop runs once per page, up to hundreds of thousands of times, so it works on
        locals only (constants included) and leaves anything rare to other methods.
        """
        source = self._source
        size = source.size
        unpack_header = _PAGE_HEADER.unpack_from
        capture_pattern, header_fixed_bytes, prefix_bytes = (
            CAPTURE_PATTERN,
            PAGE_HEADER_BYTES,
            PAGE_PREFIX_BYTES,
        )
        unknown_flags, no_granule = ~KNOWN_FLAGS, NO_GRANULE
        big_page_bytes, window_bytes = READ_WINDOW_BYTES // 4, READ_WINDOW_BYTES
        window = b""
        window_start = window_end = 0
        read_size = prefix_bytes
        offset = page_offset = total_bytes = 0
        serial = -1  # serials are unsigned: no page matches before the first one is read
        next_sequence = 0
        head_pending = True
        granule_limit = self._granule_limit
        last_granule = 0  # the head pages' granule position
        opus_offset = opus_bytes = opus_flags = 0
        while offset < size:
            page_offset = offset
            position = offset - window_start
            if offset + prefix_bytes > window_end and window_end < size:
                window = source.read_at(offset, read_size)
                window_start, window_end = offset, offset + len(window)
                position = 0
            # The window now holds PAGE_PREFIX_BYTES from `position`, or everything to the end.
            if offset + header_fixed_bytes > window_end or not window.startswith(
                capture_pattern, position
            ):
                raise _page_start_refusal(window[position : position + 4], offset, size)
            _, version, flags, granule, page_serial, sequence, _, segment_count = unpack_header(
                window, position
            )
            table_start = position + header_fixed_bytes
            table_end = table_start + segment_count
            if version or flags & unknown_flags or window_start + table_end > window_end:
                raise _page_header_refusal(version, flags, offset, size)
            total_bytes = header_fixed_bytes + segment_count + sum(window[table_start:table_end])
            offset += total_bytes
            if offset > size:
                raise AudioRefused(
                    "truncated",
                    f"The file is truncated: the Ogg page at byte {page_offset} needs "
                    f"{total_bytes} bytes but the file ends {size - page_offset} bytes after "
                    "it starts.",
                )
            read_size = prefix_bytes if total_bytes > big_page_bytes else window_bytes

            if page_serial != serial:
                if page_offset:
                    continue  # another stream multiplexed or chained in: not ours to judge
                if not flags & FLAG_BEGIN_OF_STREAM:
                    raise AudioRefused(
                        "corrupt",
                        "The file is corrupt: its first Ogg page does not begin a stream "
                        "(the beginning-of-stream flag is missing).",
                    )
                serial, next_sequence = page_serial, sequence
            if sequence != next_sequence:
                raise AudioRefused(
                    "corrupt",
                    f"The file is corrupt: Opus page {next_sequence} is missing "
                    f"(page {sequence} found at byte {page_offset}).",
                )
            next_sequence = sequence + 1
            if head_pending:
                header_bytes = header_fixed_bytes + segment_count
                self._take_head_page(_HeadPage(page_offset, flags, header_bytes, total_bytes))
                head_pending = self._tags is None
                granule_limit = self._granule_limit
            if granule != no_granule:
                last_granule = granule
                if granule > granule_limit and offset < size:
                    # Granules only grow, so the verdict cannot change: stop walking a huge file.
                    self._refuse_early(granule)
            opus_offset, opus_bytes, opus_flags = page_offset, total_bytes, flags
        return _WalkResult(
            page_offset, total_bytes, opus_offset, opus_bytes, opus_flags, last_granule
        )

    def _refuse_early(self, granule: int) -> None:
        head = self._head
        if head is not None:
            duration = (granule - head.pre_skip) / OPUS_GRANULE_RATE
            self._check_duration(duration, head.channels, at_least=True)

    def _take_head_page(self, page: _HeadPage) -> None:
        continued = bool(page.flags & FLAG_CONTINUED)
        if continued != bool(self._partial):
            raise AudioRefused(
                "corrupt",
                f"The file is corrupt: the Ogg page at byte {page.offset} disagrees with the "
                "previous page about a continued packet.",
            )
        if self._partial_overflowed:
            # Past MAX_TAGS_BYTES only the segment table matters: it says where the tags end.
            segment_table = self._source.read_at(
                page.offset + PAGE_HEADER_BYTES, page.header_bytes - PAGE_HEADER_BYTES
            )
            if any(lacing < 255 for lacing in segment_table):
                self._finish_packet(page)
            return
        body = self._source.read_at(page.offset, page.total_bytes)
        _verify_crc_of(page.offset, body, "Ogg header page")
        position = page.header_bytes
        for lacing in body[PAGE_HEADER_BYTES : page.header_bytes]:
            self._append_partial(body[position : position + lacing])
            position += lacing
            if lacing < 255:
                self._finish_packet(page)
                if self._tags is not None:
                    return

    def _append_partial(self, segment: bytes) -> None:
        if len(self._partial) + len(segment) > MAX_TAGS_BYTES:
            # Keep what fits: the text comments come first, pictures are what overflow.
            self._partial += segment[: MAX_TAGS_BYTES - len(self._partial)]
            self._partial_overflowed = True
            return
        self._partial += segment

    def _finish_packet(self, page: _HeadPage) -> None:
        packet = bytes(self._partial)
        self._partial.clear()
        self._partial_overflowed = False
        if self._head is None:
            self._head = _parse_opus_head(packet, offset=page.offset)
            self._check_channels(self._head.channels)
            seconds_per_channel = self._max_audio_seconds / self._head.channels
            self._granule_limit = self._head.pre_skip + int(seconds_per_channel * OPUS_GRANULE_RATE)
        else:
            self._tags = _parse_opus_tags(packet, offset=page.offset)

    # ------------------------------------------------------------------ verdicts

    def _verify_crc(self, offset: int, total_bytes: int, what: str) -> None:
        _verify_crc_of(offset, self._source.read_at(offset, total_bytes), what)

    def _check_channels(self, channels: int) -> None:
        if channels > self._max_channels:
            raise AudioRefused(
                "too_many_channels",
                f"The audio has {channels} channels; recognition accepts at most "
                f"{self._max_channels}.",
            )

    def _check_duration(self, duration: float, channels: int, *, at_least: bool) -> None:
        check_duration(
            duration, channels, at_least=at_least, max_audio_seconds=self._max_audio_seconds
        )


def check_duration(
    duration: float,
    channels: int,
    *,
    at_least: bool,
    max_audio_seconds: float = MAX_AUDIO_SECONDS,
) -> None:
    """AudioRefused("too_long") when `duration` on each of `channels` is over the limit."""
    total = duration * channels
    if total <= max_audio_seconds:
        return
    lasts = "lasts at least" if at_least else "lasts"
    per_channel = "" if channels == 1 else f" on each of {channels} channels"
    counted = "" if channels == 1 else f" ({logs.duration(total)} counted together)"
    raise AudioRefused(
        "too_long",
        f"The audio {lasts} {logs.duration(duration)}{per_channel}{counted}, over the "
        f"{logs.duration(max_audio_seconds)} limit for all channels together.",
    )


@dataclass(frozen=True)
class _OpusHead:
    channels: int
    pre_skip: int
    input_sample_rate: int


def _parse_opus_head(packet: bytes, *, offset: int) -> _OpusHead:
    if not packet.startswith(OPUS_HEAD_MAGIC):
        raise AudioRefused("not_opus", _describe_not_opus(packet))
    if len(packet) < OPUS_HEAD_MIN_BYTES:
        raise AudioRefused(
            "corrupt",
            f"The file is corrupt: its OpusHead header (page at byte {offset}) is only "
            f"{len(packet)} bytes long.",
        )
    version = packet[8]
    if version >> 4 != 0:
        # RFC 7845 §5.1: a major version above 0 is an incompatible format change.
        raise AudioRefused(
            "not_opus",
            f"The file uses Ogg Opus version {version >> 4}.{version & 0x0F}, which is not "
            "supported (only version 0.x is).",
        )
    channels = packet[9]
    pre_skip, input_sample_rate = struct.unpack_from("<HI", packet, 10)
    if channels == 0:
        raise AudioRefused("corrupt", "The file is corrupt: its OpusHead header says 0 channels.")
    mapping_family = packet[18]
    if mapping_family != 0 and len(packet) < OPUS_HEAD_MIN_BYTES + 2 + channels:
        raise AudioRefused(
            "corrupt",
            f"The file is corrupt: its OpusHead header is too short for the channel mapping "
            f"table of {channels} channels.",
        )
    return _OpusHead(channels=channels, pre_skip=pre_skip, input_sample_rate=input_sample_rate)


def _parse_opus_tags(packet: bytes, *, offset: int) -> tuple[str, dict[str, str]]:
    """Vendor string and comments; lenient past the magic, as RFC 7845 §5.2 asks of readers."""
    if not packet.startswith(OPUS_TAGS_MAGIC):
        raise AudioRefused(
            "corrupt",
            f"The file is corrupt: the second Opus packet (page at byte {offset}) is not an "
            "OpusTags header.",
        )
    reader = _FieldReader(packet, len(OPUS_TAGS_MAGIC))
    vendor = reader.text() or ""
    comments: dict[str, str] = {}
    count = reader.u32() or 0
    for _ in range(count):
        field = reader.text()
        if field is None:
            break  # cut at MAX_TAGS_BYTES or malformed: keep what was read
        key, separator, value = field.partition("=")
        if separator:
            comments.setdefault(key.upper(), value)
    return vendor, comments


class _FieldReader:
    """Little-endian length-prefixed fields of a comment header; None once they run out."""

    def __init__(self, data: bytes, position: int) -> None:
        self._data = data
        self._position = position

    def u32(self) -> int | None:
        if self._position + 4 > len(self._data):
            return None
        (value,) = struct.unpack_from("<I", self._data, self._position)
        self._position += 4
        return int(value)

    def text(self) -> str | None:
        length = self.u32()
        if length is None or self._position + length > len(self._data):
            return None
        raw = self._data[self._position : self._position + length]
        self._position += length
        return raw.decode("utf-8", errors="replace")


def _verify_crc_of(offset: int, page: bytes, what: str) -> None:
    stored = int.from_bytes(page[_CRC_FIELD], "little")
    if page_crc(page) != stored:
        raise AudioRefused(
            "corrupt",
            f"The file is corrupt: the checksum (CRC) of the {what} at byte {offset} does not "
            "match its contents.",
        )


def _page_start_refusal(start: bytes, offset: int, size: int) -> AudioRefused:
    """Why no page header could be read at `offset`; `start` is up to 4 bytes found there."""
    if start == CAPTURE_PATTERN:
        return _truncated(offset, size, "an Ogg page header")
    if len(start) < len(CAPTURE_PATTERN) and CAPTURE_PATTERN.startswith(start):
        return _truncated(offset, size, "an Ogg page")
    return AudioRefused(
        "corrupt",
        f"The file is corrupt: the Ogg page chain breaks at byte {offset} "
        "(no 'OggS' page starts where the previous page ends).",
    )


def _page_header_refusal(version: int, flags: int, offset: int, size: int) -> AudioRefused:
    if version != 0 or flags & ~KNOWN_FLAGS:
        return AudioRefused(
            "corrupt",
            f"The file is corrupt: the Ogg page at byte {offset} has an invalid header "
            f"(version {version}, flags 0x{flags:02x}).",
        )
    return _truncated(offset, size, "an Ogg page's segment table")


def _truncated(offset: int, size: int, what: str) -> AudioRefused:
    return AudioRefused(
        "truncated",
        f"The file is truncated: it ends inside {what} that starts at byte {offset} "
        f"(file size {size} bytes).",
    )


def _describe_not_ogg(head: bytes) -> str:
    found = _sniff_format(head)
    if found is None:
        return (
            "The file is not Ogg audio: it does not start with the Ogg capture pattern 'OggS' "
            "and its format is not recognised."
        )
    return f"The file is not Ogg audio: it looks like {found}; convert it to Ogg Opus."


def _sniff_format(head: bytes) -> str | None:
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "WAV (RIFF/WAVE)"
    if head[:4] == b"RF64" and head[8:12] == b"WAVE":
        return "WAV (RF64/WAVE)"
    if head[:3] == b"ID3" or (len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE6 == 0xE2):
        # MPEG audio frame sync with layer III (0b01 in bits 1-2 of the second byte).
        return "MP3"
    if head[:2] == b"\xff\xf1" or head[:2] == b"\xff\xf9":
        return "AAC (ADTS)"
    if head[:4] == b"fLaC":
        return "FLAC"
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return "AIFF"
    if head[4:8] == b"ftyp":
        return "MP4/M4A"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "Matroska/WebM"
    if head[:5] == b"#!AMR":
        return "AMR"
    if head[:4] == b"\x30\x26\xb2\x75":
        return "ASF/WMA"
    if head[:4] == b".snd":
        return "Sun/NeXT audio (.au)"
    if head[:4] == b"caff":
        return "Core Audio (CAF)"
    return None


def _describe_not_opus(packet: bytes) -> str:
    for magic, name in _OTHER_OGG_CODECS:
        if packet.startswith(magic):
            return f"The Ogg file holds {name}, not Opus; only Ogg Opus is accepted."
    return "The Ogg file holds an unknown codec, not Opus; only Ogg Opus is accepted."


def _format_bytes(count: int) -> str:
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if count >= scale:
            if count % scale == 0:
                return f"{count // scale} {unit}"
            return f"{count / scale:.2f} {unit} ({count} bytes)"
    return f"{count} bytes"
