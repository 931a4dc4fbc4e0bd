"""Local conversion of any recording with an audio stream to Ogg Opus, with PyAV.

PyAV's wheels bundle FFmpeg's libraries, so no system `ffmpeg` is needed. The format is found
by content (FFmpeg probes the bytes), never by the file name. The first audio stream is decoded
frame by frame, resampled and encoded to Opus as it goes: memory stays constant whatever the
length of the recording.

Speech settings (see README "Formats and conversion"): 16 kHz (8 kHz or 12 kHz sources keep
their own rate: upsampling a telephone call adds nothing), 24 kbit/s per channel, libopus in its
speech ("voip") mode with 60 ms frames. One or two channels are kept; more are mixed down to mono.
A recording over the service's 4 h (all channels counted) is refused as soon as the decoded audio
passes the limit, not after converting all of it.

Tags named TRANSCRIPT and TRANSCRIPT_CH<N> in the source (container or stream metadata) are
carried into the Opus comments: the project's local server answers with them in tests.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import av.error

from daemon.audio.oggopus import MAX_AUDIO_SECONDS, MAX_CHANNELS, AudioRefused, check_duration
from daemon.crashpoints import crash_point

OPUS_RATES = (8_000, 12_000, 16_000)  # rates libopus takes that are at most SPEECH_RATE
SPEECH_RATE = 16_000  # recognition models work at 8 or 16 kHz; higher rates only cost bytes
BITRATE_PER_CHANNEL = 24_000  # wideband speech is transparent to recognition from about 20k
OPUS_APPLICATION = "voip"  # libopus tuned for speech intelligibility
# The longest Opus frame: a third of the packets (and of the per-packet work in Python and the
# muxer) of the 20 ms default, about 7% less CPU and, in stereo, bytes closer to the bitrate
# asked for; latency does not matter for a file, and SILK codes speech in 20 ms parts anyway.
OPUS_FRAME_MILLISECONDS = 60
CARRIED_TAGS = ("TRANSCRIPT",)  # tag name prefixes copied into the Opus comments


@dataclass(frozen=True)
class Conversion:
    """What was converted: the source's format and codec, and what was done to its channels."""

    source_format: str
    source_codec: str
    source_channels: int
    channels: int  # in the Ogg Opus written
    sample_rate: int  # the encoder's rate


def output_rate(source_rate: int) -> int:
    """The Opus encoder rate for a source rate: the source's own when lower, else 16 kHz."""
    for rate in OPUS_RATES:
        if source_rate <= rate:
            return rate
    return SPEECH_RATE


def output_channels(source_channels: int) -> int:
    """Channels kept: 1 or 2 as they are; more are mixed down to mono."""
    return source_channels if 1 <= source_channels <= MAX_CHANNELS else 1


def carried_tags(*sources: dict[str, str]) -> dict[str, str]:
    """The tags to carry into the Opus comments, upper-cased; the first source wins."""
    carried: dict[str, str] = {}
    for metadata in sources:
        for key, value in metadata.items():
            name = key.upper()
            if name.startswith(CARRIED_TAGS) and name not in carried:
                carried[name] = value
    return carried


def _reason(error: av.error.FFmpegError) -> str:
    """The decoder's own words, without the file's path that FFmpeg appends."""
    return str(error.strerror or error).strip().rstrip(".")


def convert(
    source: Path, target: Path, *, max_audio_seconds: float = MAX_AUDIO_SECONDS
) -> Conversion:
    """Write `source`'s first audio stream to `target` as Ogg Opus.

    AudioRefused("no_audio") when the file is not media or holds no audio stream, with the
    decoder's reason; AudioRefused("too_long") as soon as the audio passes `max_audio_seconds`
    (all channels counted); OSError propagates (the caller removes a half-written `target`).
    """
    try:
        container = av.open(str(source), mode="r")
    except av.error.FFmpegError as error:
        if isinstance(error, av.error.FileNotFoundError | av.error.PermissionError):
            raise OSError(error.errno, _reason(error)) from None
        raise AudioRefused(
            "not_media", f"The file is not audio the decoder can read: {_reason(error)}."
        ) from None
    with container:
        if not container.streams.audio:
            kinds = sorted({str(stream.type) for stream in container.streams}) or ["none"]
            raise AudioRefused(
                "no_audio",
                f"The file ({container.format.long_name}) has no audio stream "
                f"(streams: {', '.join(kinds)}).",
            )
        stream = container.streams.audio[0]
        context: Any = stream.codec_context
        source_channels = int(context.channels)
        channels = output_channels(source_channels)
        rate = output_rate(int(context.sample_rate or SPEECH_RATE))
        tags = carried_tags(dict(stream.metadata), dict(container.metadata))
        try:
            _encode(
                container, stream, target, channels=channels, rate=rate, tags=tags,
                max_audio_seconds=max_audio_seconds,
            )  # fmt: skip
        except av.error.FFmpegError as error:
            raise AudioRefused(
                "corrupt", f"The audio cannot be decoded: {_reason(error)}."
            ) from None
        return Conversion(
            source_format=str(container.format.name),
            source_codec=str(context.name),
            source_channels=source_channels,
            channels=channels,
            sample_rate=rate,
        )


def _encode(
    container: Any,
    stream: Any,
    target: Path,
    *,
    channels: int,
    rate: int,
    tags: dict[str, str],
    max_audio_seconds: float,
) -> None:
    layout = "mono" if channels == 1 else "stereo"
    # bitexact: a fixed Ogg serial number and no encoder-version tag, so converting the same
    # source again (after a restart) gives the same bytes and finds its object already up.
    with av.open(str(target), mode="w", format="ogg", options={"fflags": "+bitexact"}) as output:
        encoder: Any = output.add_stream("libopus", rate=rate)
        encoder.layout = layout
        encoder.bit_rate = BITRATE_PER_CHANNEL * channels
        encoder.options = {
            "application": OPUS_APPLICATION,
            "frame_duration": str(OPUS_FRAME_MILLISECONDS),
        }
        encoder.metadata.update(tags)
        resampler = av.AudioResampler(format="s16", layout=layout, rate=rate)
        samples, max_samples = 0, int(max_audio_seconds * rate) // channels
        for frame in container.decode(stream):
            frame.pts = None  # the resampler and encoder count samples themselves
            for resampled in resampler.resample(frame):
                samples += resampled.samples
                if samples > max_samples:
                    check_duration(
                        samples / rate, channels, at_least=True, max_audio_seconds=max_audio_seconds
                    )
                output.mux(encoder.encode(resampled))
                crash_point("mid_conversion")
        for resampled in resampler.resample(None):
            output.mux(encoder.encode(resampled))
        output.mux(encoder.encode(None))
    with target.open("rb+") as written:
        os.fsync(written.fileno())
