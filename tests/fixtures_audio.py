"""The committed audio fixtures and broken variants derived from them in Python.

The good files under tests/data/ were made by real encoders (see tests/data/make_fixtures.sh);
every broken variant a test needs is derived here from those bytes, so no test needs opusenc,
sox or espeak-ng. Page surgery keeps the Ogg CRCs valid unless breaking them is the point.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

DATA_DIR = Path(__file__).parent / "data"

_PAGE_HEADER_BYTES = 27
_GRANULE_FIELD = slice(6, 14)
_SEQUENCE_FIELD = slice(18, 22)
_CRC_FIELD = slice(22, 26)
_OPUS_HEAD_CHANNELS = 9  # byte of OpusHead holding the channel count (RFC 7845 §5.1)
_MAX_PAGE_SEGMENTS = 255


def fixture_path(name: str) -> Path:
    """Path of a committed fixture, e.g. fixture_path("mono.ogg")."""
    return Path(__file__).parent / "data" / name


def read_fixture(name: str) -> bytes:
    return fixture_path(name).read_bytes()


@dataclass(frozen=True)
class Page:
    """One Ogg page located in a byte string."""

    offset: int
    header_bytes: int  # 27 + segment count
    body_bytes: int

    @property
    def end(self) -> int:
        return self.offset + self.header_bytes + self.body_bytes

    @property
    def body_offset(self) -> int:
        return self.offset + self.header_bytes


def pages(data: bytes) -> list[Page]:
    """Every page of a well-formed Ogg byte string, in file order."""
    found = []
    offset = 0
    while offset < len(data):
        if data[offset : offset + 4] != b"OggS":
            raise ValueError(f"no Ogg page at byte {offset}")
        segment_count = data[offset + 26]
        table = data[offset + _PAGE_HEADER_BYTES : offset + _PAGE_HEADER_BYTES + segment_count]
        page = Page(offset, _PAGE_HEADER_BYTES + segment_count, sum(table))
        found.append(page)
        offset = page.end
    return found


def page_offsets(data: bytes) -> list[int]:
    """Byte offset of each page."""
    return [page.offset for page in pages(data)]


def truncate(data: bytes, n_bytes_removed: int) -> bytes:
    """The file cut short: its last n_bytes_removed bytes are gone."""
    if not 0 < n_bytes_removed <= len(data):
        raise ValueError(f"cannot remove {n_bytes_removed} bytes of {len(data)}")
    return data[: len(data) - n_bytes_removed]


def corrupt_page(data: bytes, page_index: int) -> bytes:
    """Flip one byte in the body of a page, leaving its stored CRC stale."""
    page = pages(data)[page_index]
    if page.body_bytes == 0:
        raise ValueError(f"page {page_index} has no body to corrupt")
    broken = bytearray(data)
    broken[page.body_offset + page.body_bytes // 2] ^= 0xFF
    return bytes(broken)


def break_page_chain(data: bytes, page_index: int) -> bytes:
    """Overwrite a page's 'OggS' capture pattern, as disk or transfer damage would."""
    page = pages(data)[page_index]
    broken = bytearray(data)
    broken[page.offset : page.offset + 4] = b"\x00\x00\x00\x00"
    return bytes(broken)


def grow_first_segment(data: bytes, page_index: int) -> bytes:
    """Make a page's first lacing value one larger (CRC fixed), so the next page is misplaced."""
    page = pages(data)[page_index]
    lacing_at = page.offset + _PAGE_HEADER_BYTES
    if data[lacing_at] == 255:
        raise ValueError(f"page {page_index} starts with a full segment")
    broken = bytearray(data)
    broken[lacing_at] += 1
    _refresh_crc(broken, page)
    return bytes(broken)


def remove_page(data: bytes, page_index: int) -> bytes:
    """Cut one whole page out, as a bad copy that lost a block might."""
    page = pages(data)[page_index]
    return data[: page.offset] + data[page.end :]


def set_page_granule(data: bytes, page_index: int, granule: int) -> bytes:
    """Rewrite one page's granule position and fix its CRC."""
    all_pages = pages(data)
    page = all_pages[page_index]
    patched = bytearray(data)
    patched[page.offset + _GRANULE_FIELD.start : page.offset + _GRANULE_FIELD.stop] = struct.pack(
        "<q", granule
    )
    _refresh_crc(patched, page)
    return bytes(patched)


def set_last_granule(data: bytes, granule: int) -> bytes:
    """Rewrite the last page's granule position (CRC fixed): hours of 'audio' in a few KB."""
    return set_page_granule(data, -1, granule)


def patch_page(data: bytes, page_index: int, body_position: int, new_bytes: bytes) -> bytes:
    """Overwrite bytes inside a page's body and fix its CRC."""
    page = pages(data)[page_index]
    if body_position + len(new_bytes) > page.body_bytes:
        raise ValueError("patch runs past the page body")
    patched = bytearray(data)
    start = page.body_offset + body_position
    patched[start : start + len(new_bytes)] = new_bytes
    _refresh_crc(patched, page)
    return bytes(patched)


def set_header_flags(data: bytes, page_index: int, flags: int) -> bytes:
    """Rewrite a page's header-type flags (continued 0x01, BOS 0x02, EOS 0x04); CRC fixed."""
    page = pages(data)[page_index]
    patched = bytearray(data)
    patched[page.offset + 5] = flags
    _refresh_crc(patched, page)
    return bytes(patched)


def set_channel_count(data: bytes, channels: int) -> bytes:
    """Rewrite the OpusHead channel count (byte 9 of the first packet) and fix the CRC."""
    return patch_page(data, 0, _OPUS_HEAD_CHANNELS, bytes([channels]))


def opus_tags_packet(vendor: str, fields: list[bytes]) -> bytes:
    """An OpusTags packet; fields are raw 'KEY=value' byte strings (may be invalid UTF-8)."""
    vendor_bytes = vendor.encode()
    packet = b"OpusTags" + struct.pack("<I", len(vendor_bytes)) + vendor_bytes
    packet += struct.pack("<I", len(fields))
    for field in fields:
        packet += struct.pack("<I", len(field)) + field
    return packet


_BIT_REVERSED = bytes(int(f"{value:08b}"[::-1], 2) for value in range(256))


def page_crc(page: bytes) -> int:
    """The CRC an Ogg page should carry (its CRC field counted as zero), as the daemon's
    `oggopus.page_crc` computes it, but through zlib: Ogg's CRC-32 is zlib's on bit-reversed
    bytes, without zlib's inversions, bit-reversed; so a 45 MB fixture takes a moment."""
    data = (page[:22] + b"\x00\x00\x00\x00" + page[26:]).translate(_BIT_REVERSED)
    reflected = zlib.crc32(data, 0xFFFFFFFF) ^ 0xFFFFFFFF
    return int(f"{reflected:032b}"[::-1], 2)


def make_page(
    *, serial: int, sequence: int, granule: int, flags: int, lacing: list[int], body: bytes
) -> bytes:
    """A valid Ogg page with the given fields and a correct CRC."""
    header = b"OggS" + struct.pack("<BBqIIIB", 0, flags, granule, serial, sequence, 0, len(lacing))
    page = bytearray(header + bytes(lacing) + body)
    page[_CRC_FIELD] = struct.pack("<I", page_crc(bytes(page)))
    return bytes(page)


def replace_tags(data: bytes, packet: bytes) -> bytes:
    """Swap the OpusTags packet (alone on page 1, as opusenc writes it) for another.

    A packet too long for one page is spread over several; later pages are renumbered and
    their CRCs fixed, so the result is a valid stream.
    """
    all_pages = pages(data)
    tags_page = all_pages[1]
    serial, first_sequence = struct.unpack_from("<II", data, tags_page.offset + 14)
    lacing = [255] * (len(packet) // 255) + [len(packet) % 255]
    new_pages: list[bytes] = []
    position = 0
    for start in range(0, len(lacing), _MAX_PAGE_SEGMENTS):
        page_lacing = lacing[start : start + _MAX_PAGE_SEGMENTS]
        body = packet[position : position + sum(page_lacing)]
        position += len(body)
        new_pages.append(
            make_page(
                serial=serial,
                sequence=first_sequence + len(new_pages),
                granule=0,
                flags=0x01 if start else 0x00,
                lacing=page_lacing,
                body=body,
            )
        )
    added = len(new_pages) - 1
    rest = bytearray(data[tags_page.end :])
    for page in pages(bytes(rest)):
        field = slice(page.offset + _SEQUENCE_FIELD.start, page.offset + _SEQUENCE_FIELD.stop)
        (sequence,) = struct.unpack("<I", rest[field])
        rest[field] = struct.pack("<I", sequence + added)
        _refresh_crc(rest, page)
    return data[: tags_page.offset] + b"".join(new_pages) + bytes(rest)


def _refresh_crc(buffer: bytearray, page: Page) -> None:
    start, end = page.offset, page.end
    crc = page_crc(bytes(buffer[start:end]))
    buffer[start + _CRC_FIELD.start : start + _CRC_FIELD.stop] = struct.pack("<I", crc)


MONO_TEXT = "Hello from the watch folder. This is a test recording."


def larger_than(size: int) -> bytes:
    """mono.ogg made larger than `size` bytes by a cover picture in its tags: a valid Ogg Opus
    file of under 4 s (pictures of megabytes are common in tags)."""
    picture = b"METADATA_BLOCK_PICTURE=" + b"A" * size
    tags = opus_tags_packet("speechkit-watch tests", [b"TRANSCRIPT=" + MONO_TEXT.encode(), picture])
    return replace_tags(read_fixture("mono.ogg"), tags)


def two_speakers() -> bytes:
    """mono.ogg whose two sentences are said by two speakers for the echo engine (SPEAKERS)."""
    tags = opus_tags_packet(
        "speechkit-watch tests", [b"TRANSCRIPT=" + MONO_TEXT.encode(), b"SPEAKERS=1,2"]
    )
    return replace_tags(read_fixture("mono.ogg"), tags)
