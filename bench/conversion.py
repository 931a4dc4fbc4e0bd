"""Conversion speed and memory: long recordings converted to Ogg Opus as the daemon converts them.

Makes three inputs with PyAV (a 1-hour mono 8 kHz PCM WAV, a 1-hour stereo 44.1 kHz MP3 and a
10-minute MP4 video with stereo AAC audio), then converts each in a fresh process that has the
daemon's modules loaded, `--runs` times, and reports the median multiple of real time (audio
seconds per second of wall time and per second of CPU) and the process's peak RSS. Timings
belong here, never in the tests. `make bench` runs it after the pipeline benchmark.
"""

from __future__ import annotations

import argparse
import array
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path
from typing import cast

import av
from av.audio.stream import AudioStream
from av.video.stream import VideoStream

PROJECT_ROOT = Path(__file__).resolve().parents[1]
TARGET_REALTIME = 100.0  # the target: at least 100x real time on one core
TARGET_RSS_MB = 150.0  # the target: peak RSS while converting the 1-hour file
FRAME_SAMPLES = 1024

CHILD = """
import resource, sys, time
from pathlib import Path
import daemon.steps  # the daemon's modules, as loaded when it converts
from daemon.audio import convert
started, cpu = time.monotonic(), time.process_time()
convert.convert(Path(sys.argv[1]), Path(sys.argv[2]))
wall, cpu = time.monotonic() - started, time.process_time() - cpu
print(wall, cpu, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def one_second(rate: int, channels: int) -> bytes:
    """A second of a speech-band signal (a few tones), 16-bit interleaved: repeated to length,
    since building an hour of samples in Python would take longer than converting it."""
    samples = array.array("h")
    for index in range(rate):
        for channel in range(channels):
            frequency = 180.0 + 70.0 * channel + 40.0 * (index * 5 // rate)
            samples.append(int(9000 * math.sin(2 * math.pi * frequency * index / rate)))
    return samples.tobytes()


def make_audio(
    path: Path,
    *,
    container: str,
    codec: str,
    rate: int,
    channels: int,
    seconds: float,
    video: bool = False,
) -> None:
    """Write `seconds` of audio (and a tiny 1 fps video when asked) with PyAV."""
    layout = "mono" if channels == 1 else "stereo"
    second = one_second(rate, channels)
    bytes_per_sample = 2 * channels
    with av.open(str(path), "w", format=container) as output:
        stream = cast("AudioStream", output.add_stream(codec, rate=rate, layout=layout))
        picture: VideoStream | None = None
        if video:
            picture = output.add_stream("mpeg4", rate=1)
            picture.width, picture.height, picture.pix_fmt = 64, 64, "yuv420p"
        black = av.VideoFrame(64, 64, "yuv420p")
        total = int(seconds * rate)
        done = 0
        while done < total:
            count = min(FRAME_SAMPLES, total - done, rate - done % rate)
            frame = av.AudioFrame(format="s16", layout=layout, samples=count)
            start = (done % rate) * bytes_per_sample
            frame.planes[0].update(second[start : start + count * bytes_per_sample])
            frame.sample_rate = rate
            frame.pts = done
            frame.time_base = Fraction(1, rate)
            for packet in stream.encode(frame):
                output.mux(packet)
            if picture is not None and done % rate == 0:
                black.pts = done // rate
                for packet in picture.encode(black):
                    output.mux(packet)
            done += count
        for packet in stream.encode(None):
            output.mux(packet)
        if picture is not None:
            for packet in picture.encode(None):
                output.mux(packet)


def convert_once(source: Path, target: Path) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds and peak RSS (MB) of one conversion in a fresh process."""
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(source), str(target)],
        capture_output=True, text=True, check=True, cwd=PROJECT_ROOT,
    )  # fmt: skip
    wall, cpu, rss_kb = result.stdout.split()
    target.unlink()
    return float(wall), float(cpu), int(rss_kb) / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--output", type=Path, default=PROJECT_ROOT / "bench" / "conversion.json")
    arguments = parser.parse_args()
    inputs = [
        ("1 h mono 8 kHz WAV", "call.wav", "wav", "pcm_s16le", 8000, 1, 3600.0, False),
        ("1 h stereo MP3", "meeting.mp3", "mp3", "libmp3lame", 44100, 2, 3600.0, False),
        ("10 min MP4 video (AAC stereo)", "video.mp4", "mp4", "aac", 48000, 2, 600.0, True),
    ]
    rows = []
    with tempfile.TemporaryDirectory(prefix="speechkit-bench-convert-") as folder:
        work = Path(folder)
        for label, name, container, codec, rate, channels, seconds, video in inputs:
            source = work / name
            started = time.monotonic()
            make_audio(source, container=container, codec=codec, rate=rate, channels=channels,
                       seconds=seconds, video=video)  # fmt: skip
            print(f"made {label}: {source.stat().st_size / 1e6:.1f} MB in "
                  f"{time.monotonic() - started:.0f} s", flush=True)  # fmt: skip
            runs = [convert_once(source, work / "out.ogg") for _ in range(arguments.runs)]
            wall = statistics.median(run[0] for run in runs)
            cpu = statistics.median(run[1] for run in runs)
            rss = max(run[2] for run in runs)
            rows.append({"input": label, "audio_seconds": seconds, "wall_seconds": round(wall, 2),
                         "realtime_wall": round(seconds / wall, 1),
                         "realtime_cpu": round(seconds / cpu, 1), "peak_rss_mb": round(rss, 1)})  # fmt: skip
            source.unlink()
    print()
    print("| input | wall | x real time (wall / CPU) | peak RSS |")
    print("|---|---|---|---|")
    for row in rows:
        print(f"| {row['input']} | {row['wall_seconds']:.1f} s | {row['realtime_wall']:.0f}x / "
              f"{row['realtime_cpu']:.0f}x | {row['peak_rss_mb']:.0f} MB |")  # fmt: skip
    print(f"\nTargets: at least {TARGET_REALTIME:.0f}x real time on one core; peak RSS under "
          f"{TARGET_RSS_MB:.0f} MB. Machine: {os.cpu_count()} CPUs, Python "
          f"{platform.python_version()}, {platform.platform()}, {arguments.runs} runs (median).")  # fmt: skip
    arguments.output.write_text(json.dumps({"runs": arguments.runs, "results": rows}, indent=2)
                                + "\n", encoding="utf-8")  # fmt: skip
    return 0


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    sys.exit(main())
