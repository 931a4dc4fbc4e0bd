"""The whisper engine: speed per channel, the server's peak memory, and the demo's wait.

1. Speed: the local server's whisper engine (model loaded once, in this process) recognises
   every committed speech recording (samples/ and tests/data/speech/); reported as seconds of
   processing per minute of audio per channel, per file and overall, plus the model's load time.
2. Memory: `speechkit-local --engine whisper` as a subprocess recognises the same files (read
   by plain GET from a loopback file server); its peak RSS (VmHWM) with the model loaded.
3. The demo: `tools/demo.py` runs whole (SeaweedFS, the server, the daemon) and its
   drop-to-transcript time of each sample is read from its output.

Timings belong here, never in the tests. `make bench` runs it; results also go to
bench/whisper.json.
"""

from __future__ import annotations

import argparse
import contextlib
import http.server
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests

PROJECT_ROOT = Path(__file__).resolve().parents[1]
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

from speechkit_local import audio, devstack, engines  # noqa: E402 - path set up above
from speechkit_local.logic import RecognizeRequest  # noqa: E402

RECORDINGS = [
    ("samples/greeting.ogg", "en-US"),
    ("samples/privet.ogg", "ru-RU"),
    ("samples/call-stereo.ogg", "en-US"),
    ("tests/data/speech/en.ogg", "en-US"),
    ("tests/data/speech/ru.ogg", "ru-RU"),
    ("tests/data/speech/dialogue.ogg", "en-US"),
]
API_KEY = "bench-whisper-key"
WAIT_LIMIT_SECONDS = 300.0
DROP_LINE = re.compile(r"^(\S+\.txt) appeared ([0-9.]+) s after the drop")


def engine_speed(rows: list[dict[str, Any]]) -> dict[str, Any]:
    started = time.monotonic()
    engine = engines.load_engine(engines.WHISPER)
    load_seconds = time.monotonic() - started
    print(f"model loaded in {load_seconds:.1f} s: {engine.describe()}")
    stop = threading.Event()
    total_audio = total_wall = 0.0
    for name, language in RECORDINGS:
        data = (PROJECT_ROOT / name).read_bytes()
        facts = audio.read_audio(data, "OGG_OPUS")
        request = RecognizeRequest(uri=name, language_code=language)
        started = time.monotonic()
        utterances = engine.recognize(data, facts, request, stop)
        wall = time.monotonic() - started
        channel_minutes = facts.duration_seconds * facts.channels / 60
        total_audio += channel_minutes
        total_wall += wall
        rows.append({"file": name, "language": language, "channels": facts.channels,
                     "audio_seconds": round(facts.duration_seconds, 2),
                     "wall_seconds": round(wall, 2),
                     "seconds_per_audio_minute_per_channel": round(wall / channel_minutes, 1),
                     "text": " | ".join(u.normalized_text for u in utterances)})  # fmt: skip
    return {"load_seconds": round(load_seconds, 1),
            "seconds_per_audio_minute_per_channel": round(total_wall / total_audio, 1)}  # fmt: skip


class _QuietFiles(http.server.SimpleHTTPRequestHandler):
    """Serves the checkout's files; no log line per request."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, directory=str(PROJECT_ROOT), **kwargs)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def file_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _QuietFiles)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def server_peak_rss(directory: Path) -> float:
    with file_server() as files, devstack.LocalServerProcess(
        api_keys=[API_KEY], extra_args=["--engine", "whisper"], directory=directory,
        ready_timeout_seconds=120.0,
    ) as server, requests.Session() as session:  # fmt: skip
        session.headers["Authorization"] = f"Api-Key {API_KEY}"
        ids = []
        for name, language in RECORDINGS:
            body = {"config": {"specification": {"languageCode": language}},
                    "audio": {"uri": f"{files}/{name}"}}  # fmt: skip
            answer = session.post(server.recognize_url, json=body, timeout=10)
            answer.raise_for_status()
            ids.append(answer.json()["id"])
        deadline = time.monotonic() + WAIT_LIMIT_SECONDS
        for operation_id in ids:
            while session.get(f"{server.operations_url}/{operation_id}",
                              timeout=10).json()["done"] is not True:  # fmt: skip
                if time.monotonic() > deadline:
                    raise RuntimeError("the whisper server did not finish the recordings")
                time.sleep(0.2)
        assert server.pid is not None
        status = Path(f"/proc/{server.pid}/status").read_text(encoding="ascii")
    peak = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
    if peak is None:
        raise RuntimeError("no VmHWM in /proc/PID/status")
    return int(peak.group(1)) / 1024


def demo_waits() -> dict[str, float]:
    result = subprocess.run([sys.executable, str(PROJECT_ROOT / "tools" / "demo.py")],
                            capture_output=True, text=True, timeout=600, check=False)  # fmt: skip
    if result.returncode != 0:
        raise RuntimeError(f"the demo failed:\n{result.stdout[-2000:]}")
    waits = {}
    for line in result.stdout.splitlines():
        match = DROP_LINE.match(line)
        if match:
            waits[match.group(1)] = float(match.group(2))
    return waits


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", type=Path, default=PROJECT_ROOT / "bench" / "whisper.json")
    parser.add_argument("--skip-demo", action="store_true", help="only speed and memory")
    arguments = parser.parse_args()
    rows: list[dict[str, Any]] = []
    speed = engine_speed(rows)
    print("\n| file | channels | audio | processing | s per audio minute per channel | text |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['file']} | {row['channels']} | {row['audio_seconds']:.1f} s | "
              f"{row['wall_seconds']:.1f} s | {row['seconds_per_audio_minute_per_channel']:.0f} | "
              f"{row['text']} |")  # fmt: skip
    print(f"\nwhisper engine: {speed['seconds_per_audio_minute_per_channel']:.0f} s of processing "
          f"per audio minute per channel (model load {speed['load_seconds']:.1f} s)")  # fmt: skip
    work = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-whisper-{os.getpid()}"
    rss_mb = server_peak_rss(work)
    print(f"whisper server peak RSS with the model loaded: {rss_mb:.0f} MB")
    waits = {} if arguments.skip_demo else demo_waits()
    for name, seconds in waits.items():
        print(f"demo drop-to-transcript: {name} {seconds:.1f} s")
    document = {"cpus": os.cpu_count(), **speed, "server_peak_rss_mb": round(rss_mb),
                "demo_drop_to_transcript_seconds": waits, "files": rows}  # fmt: skip
    arguments.output.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n",
                                encoding="utf-8")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
