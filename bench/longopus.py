"""A long Ogg Opus recording for the benchmark, made in seconds from a real one.

The 4-hour, 1 GiB recording of the benchmark is made from the audio packets of a real opusenc
file (tests/data): its OpusHead and OpusTags pages are kept, then its packets are repeated on
full pages (255 lacing values each) until the file reaches the wanted size, and the granule
positions are spread so that the last page ends at the wanted duration. Every page has its own
sequence number and a correct CRC, so the file passes the daemon's Ogg Opus check as a recording
of that length. It is written into a temporary folder, never committed.
"""

from __future__ import annotations

import struct
from pathlib import Path

from daemon.audio import oggopus

PAGE_HEADER_BYTES = 27
MAX_SEGMENTS = 255
LACING_VALUE = 255  # a packet of n bytes takes n // 255 + 1 lacing values
_HEADER = struct.Struct("<4sBBqIIIB")
FLAG_BEGIN, FLAG_END = 0x02, 0x04
WRITE_BLOCK_BYTES = 8 * 1024 * 1024


def ogg_pages(data: bytes) -> list[tuple[int, int, bytes, bytes]]:
    """(flags, granule, lacing, body) of every page of a well-formed Ogg stream."""
    pages = []
    offset = 0
    while offset < len(data):
        _, _, flags, granule, _, _, _, count = _HEADER.unpack_from(data, offset)
        lacing = data[offset + PAGE_HEADER_BYTES : offset + PAGE_HEADER_BYTES + count]
        start = offset + PAGE_HEADER_BYTES + count
        pages.append((flags, granule, lacing, data[start : start + sum(lacing)]))
        offset = start + sum(lacing)
    return pages


def packets(pages: list[tuple[int, int, bytes, bytes]]) -> list[bytes]:
    """The packets of pages, in order (a packet ends at a lacing value below 255)."""
    found, partial = [], b""
    for _, _, lacing, body in pages:
        position = 0
        for value in lacing:
            partial += body[position : position + value]
            position += value
            if value < LACING_VALUE:
                found.append(partial)
                partial = b""
    return found


def page(*, serial: int, sequence: int, granule: int, flags: int, packets: list[bytes]) -> bytes:
    lacing = bytearray()
    for packet in packets:
        lacing += bytes([LACING_VALUE] * (len(packet) // LACING_VALUE))
        lacing.append(len(packet) % LACING_VALUE)
    header = _HEADER.pack(b"OggS", 0, flags, granule, serial, sequence, 0, len(lacing))
    whole = bytearray(header + lacing + b"".join(packets))
    whole[22:26] = struct.pack("<I", oggopus.page_crc(bytes(whole)))
    return bytes(whole)


def write_long_opus(source: bytes, target: Path, *, size_bytes: int, seconds: float) -> int:
    """Write a recording of about `size_bytes` (never more) lasting `seconds`; its size."""
    pages = ogg_pages(source)
    serial = _HEADER.unpack_from(source, 0)[4]
    head, tags = page_bytes(source, 0), page_bytes(source, 1)
    pre_skip = struct.unpack_from("<H", pages[0][3], 10)[0]
    audio = packets(pages[2:])
    per_page = []  # the packets of one full page, taken round the source's packets
    segments = 0
    for packet in audio * (1 + MAX_SEGMENTS // max(1, len(audio))):
        needed = len(packet) // LACING_VALUE + 1
        if segments + needed > MAX_SEGMENTS:
            break
        per_page.append(packet)
        segments += needed
    page_size = PAGE_HEADER_BYTES + segments + sum(len(packet) for packet in per_page)
    count = max(1, (size_bytes - len(head) - len(tags)) // page_size)
    total_granule = pre_skip + round(seconds * oggopus.OPUS_GRANULE_RATE)
    written = len(head) + len(tags)
    with target.open("wb") as stream:
        stream.write(head + tags)
        block = bytearray()
        for index in range(count):
            granule = pre_skip + (total_granule - pre_skip) * (index + 1) // count
            flags = FLAG_END if index == count - 1 else 0
            block += page(serial=serial, sequence=index + 2, granule=granule, flags=flags,
                          packets=per_page)  # fmt: skip
            if len(block) >= WRITE_BLOCK_BYTES:
                stream.write(block)
                written += len(block)
                block.clear()
        stream.write(block)
        written += len(block)
    return written


def page_bytes(data: bytes, index: int) -> bytes:
    """The bytes of page `index` as they are."""
    offset = 0
    for _ in range(index):
        count = data[offset + 26]
        offset += PAGE_HEADER_BYTES + count + sum(data[offset + 27 : offset + 27 + count])
    count = data[offset + 26]
    return data[
        offset : offset + PAGE_HEADER_BYTES + count + sum(data[offset + 27 : offset + 27 + count])
    ]
