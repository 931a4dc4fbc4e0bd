"""Reading the audio of a request as the service does: decode it, with a real decoder.

The local server must not agree with the daemon by construction, so it shares none of the
daemon's audio code: it decodes every packet with FFmpeg's decoders through PyAV (the `local`
extra). Whatever FFmpeg cannot demux or decode as the request's `audioEncoding` is what the
service answers "Invalid audio received" for. Duration comes from the decoded samples, not from
container fields, so a stream that lies about its length is measured as it really is.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass, field

import av
import av.error

MAX_CHANNELS = 2  # asynchronous recognition handles at most two channels
MAX_AUDIO_SECONDS = 4 * 3600.0  # 4 h of audio, all channels together
PCM_BYTES_PER_SAMPLE = 2  # LINEAR16_PCM: 16-bit little-endian samples
# What FFmpeg must find for each audioEncoding: container format names and the codec.
EXPECTED = {
    "OGG_OPUS": ({"ogg"}, "opus"),
    "MP3": ({"mp3"}, "mp3"),
}


class InvalidAudio(Exception):  # noqa: N818 - the service's own words for it
    """The audio cannot be recognised; `reason` is for the server's log, never the client."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class AudioFacts:
    duration_seconds: float
    channels: int
    # Vorbis comments of the stream (Ogg Opus) or container tags: the echo engine reads these.
    comments: Mapping[str, str] = field(default_factory=dict)


def read_audio(
    data: bytes,
    encoding: str,
    *,
    sample_rate_hertz: int | None = None,
    channel_count: int | None = None,
) -> AudioFacts:
    """Decode `data` as `encoding` (OGG_OPUS, MP3 or LINEAR16_PCM); InvalidAudio if it is not."""
    if encoding == "LINEAR16_PCM":
        facts = _raw_pcm(data, sample_rate_hertz or 8000, channel_count or 1)
    elif encoding in EXPECTED:
        facts = _decode(data, *EXPECTED[encoding])
    else:
        raise InvalidAudio(f"unsupported audioEncoding {encoding}")
    if facts.channels > MAX_CHANNELS:
        raise InvalidAudio(f"{facts.channels} channels; at most {MAX_CHANNELS} are recognised")
    if facts.duration_seconds * facts.channels > MAX_AUDIO_SECONDS:
        raise InvalidAudio(f"{facts.duration_seconds:.0f} s x {facts.channels} channels: over 4 h")
    return facts


def _raw_pcm(data: bytes, sample_rate: int, channels: int) -> AudioFacts:
    frame = PCM_BYTES_PER_SAMPLE * channels
    if not data or len(data) % frame:
        raise InvalidAudio(f"{len(data)} bytes is not a whole number of {channels}-channel frames")
    return AudioFacts(len(data) / frame / sample_rate, channels)


def _decode(data: bytes, formats: set[str], codec: str) -> AudioFacts:
    try:
        container = av.open(io.BytesIO(data), mode="r")
    except (av.error.FFmpegError, ValueError) as error:
        raise InvalidAudio(f"not a media file: {error}") from None
    with container:
        names = set(container.format.name.split(","))
        if not names & formats:
            raise InvalidAudio(f"container {container.format.name}, expected {sorted(formats)}")
        if not container.streams.audio:
            raise InvalidAudio("no audio stream")
        stream = container.streams.audio[0]
        if stream.codec_context.name != codec:
            raise InvalidAudio(f"codec {stream.codec_context.name}, expected {codec}")
        channels = stream.codec_context.channels
        comments = {**container.metadata, **stream.metadata}
        samples = 0
        rate = 0
        try:
            for frame in container.decode(stream):
                samples += frame.samples
                rate = frame.sample_rate
        except av.error.FFmpegError as error:
            raise InvalidAudio(f"cannot decode: {error}") from None
    if samples == 0 or rate == 0:
        raise InvalidAudio("no audio samples could be decoded")
    return AudioFacts(samples / rate, channels, comments)
