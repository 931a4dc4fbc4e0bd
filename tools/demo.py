"""`make demo`: the whole product on this machine in about a minute, no cloud account needed.

Starts a real S3 server (SeaweedFS) and the local SpeechKit-compatible server, writes a daemon
config into a temporary folder, runs `speechkit-watch run` on it, drops the shipped samples
into the watched folder the way a person does (copy under a temporary name, then rename),
prints every transcript as it appears, then `speechkit-watch status`, and stops everything.
Exit code 0 when every sample was transcribed and the daemon stopped cleanly on SIGTERM.
"""

from __future__ import annotations

import contextlib
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
# The real service's documented speed (about 10 s per audio minute), so the wait is realistic.
SECONDS_PER_MINUTE = 10.0
SETTLE_SECONDS = 1.0  # the daemon's quiet time before a dropped file counts as complete
TRANSCRIPT_TIMEOUT_SECONDS = 120.0  # per file, from its drop; the samples need ~5-15 s each
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
                waited = time.monotonic() - dropped_at
                say(f"\n{transcript.name} appeared {waited:.0f} s after the drop:")
                say(textwrap.indent(transcript.read_text(encoding="utf-8").rstrip(), "    "))
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


def run_demo(samples: list[Path], workdir: Path) -> None:
    inbox = workdir / "inbox"
    inbox.mkdir()
    config_path = workdir / "config.yaml"
    daemon_log = workdir / "daemon.log"
    api_key = "demo-api-key-" + os.urandom(8).hex()

    with contextlib.ExitStack() as stack:
        say("Starting SeaweedFS, a real S3 server standing in for Yandex Object Storage ...")
        storage = stack.enter_context(devstack.SeaweedFS(workdir / "seaweedfs"))
        say(f"  S3 endpoint {storage.endpoint_url}, bucket {storage.bucket!r}")

        say("Starting the local SpeechKit-compatible server ...")
        say(
            "  It is an echo engine: it does not recognise speech, it returns the text stored in\n"
            "  each sample's Opus tags, at the real service's pace (about 10 s per audio minute)."
        )
        speechkit = stack.enter_context(
            devstack.LocalServerProcess(
                api_keys=[api_key],
                storage=storage,
                seconds_per_minute=SECONDS_PER_MINUTE,
                directory=workdir / "speechkit",
            )
        )
        say(f"  API at {speechkit.url}")

        devstack.write_daemon_config(
            config_path,
            watch_dirs=[inbox],
            storage=storage,
            speechkit_url=speechkit.url,
            api_key=api_key,
            state_file=workdir / "state.db",
            settle_seconds=SETTLE_SECONDS,
            extra={"polling": {"seconds_per_minute": SECONDS_PER_MINUTE}},
        )
        environ = {**os.environ, **devstack.daemon_env(storage, api_key)}

        say(f"\nStarting `speechkit-watch run -c {config_path}` (log: {daemon_log})")
        process = stack.enter_context(running_daemon(config_path, environ, daemon_log))
        time.sleep(DAEMON_STARTUP_SECONDS)
        error = daemon_exit_error(process, daemon_log)
        if error is not None:
            raise error

        say(f"\nDropping {len(samples)} samples into {inbox}:")
        dropped: dict[Path, float] = {}
        for sample in samples:
            audio = drop_like_a_person(sample, inbox)
            dropped[audio] = time.monotonic()
            say(f"  cp {sample.name} -> {audio.name}.part, then mv to {audio.name}")
            time.sleep(DROP_PAUSE_SECONDS)

        say("\nWaiting for transcripts (NAME.txt and NAME.json appear beside the audio) ...")
        wait_for_transcripts(dropped, process, daemon_log)
        print_status(config_path, environ)
        stop_daemon(process, daemon_log)
    say(f"\nDone: {len(samples)} files transcribed; SeaweedFS and the local server are stopped.")


def _interrupt_once(signal_number: int, frame: FrameType | None) -> None:
    # Cleanup (stopping three processes) must finish: later Ctrl-C or SIGTERM are ignored.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt


def main() -> int:
    signal.signal(signal.SIGINT, _interrupt_once)
    signal.signal(signal.SIGTERM, _interrupt_once)
    samples = sorted(SAMPLES_DIRECTORY.glob(SAMPLE_PATTERN))
    if not samples:
        say(f"demo: no {SAMPLE_PATTERN} files in {SAMPLES_DIRECTORY}")
        return 1
    workdir = Path(tempfile.mkdtemp(prefix="speechkit-demo-"))
    try:
        run_demo(samples, workdir)
    except DemoError as error:
        say(f"\ndemo failed: {error}")
        say(f"Files and logs are kept in {workdir}")
        return 1
    except KeyboardInterrupt:
        say(f"\ndemo interrupted; every process it started is stopped. Files: {workdir}")
        return 130
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
