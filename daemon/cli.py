"""The command line: `speechkit-watch run | status | retry | render`."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from daemon import __version__, config, layout, lifecycle, logs, quota, render, state, uploads
from daemon.render import files, transcripts

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report Ctrl-C
OFFLINE_COMMANDS = ("status", "retry", "render")  # never talk to the cloud: need no secrets

DESCRIPTION = """\
Watch folders for recordings (Ogg Opus as it is; WAV, MP3, M4A, FLAC, WebM, AMR, video and
anything else with an audio stream converted locally) and transcribe them with Yandex SpeechKit
asynchronous recognition (API v2, or v3 with speaker labels and without a bucket).
Each NAME.wav gets NAME.txt and NAME.json beside it.

config file: -c CONFIG, else $SPEECHKIT_WATCH_CONFIG, else /etc/speechkit-watch/config.yaml
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="speechkit-watch",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("-c", "--config", metavar="CONFIG", help="the YAML config file")
        return sub

    command("run", "run the daemon in the foreground (what systemd runs); exit 0 after SIGTERM "
            "or SIGINT, 2 on a config or start-up error")  # fmt: skip
    command("check", "validate the config, then check the folders, the inotify limits, the "
            "state file, the metrics address, the bucket if configured (write, link, delete a "
            "test object) and the API credentials, one line each; exit 0 only if all pass"
            )  # fmt: skip
    status = command("status", "counts per state, files in progress with age and operation id, "
                     "a large upload's progress, failed files with the reason, webhook events "
                     "not delivered yet, audio waiting for after_done/after_failed; safe while "
                     "the daemon runs")  # fmt: skip
    status.add_argument("--json", action="store_true", help="machine-readable output")
    retry = command("retry", "put failed files back in the queue with the current config's "
                    "settings for their folder (a file the local check refused: only once it "
                    "passes now); a running daemon picks them up; exit 1 if a named file is "
                    "unknown or still refused")  # fmt: skip
    which = retry.add_mutually_exclusive_group(required=True)
    which.add_argument("--failed", action="store_true", help="every failed file")
    which.add_argument("paths", nargs="*", default=[], metavar="PATH", help="these files")
    transcribe = command("transcribe", "transcribe these files now (same checks, upload, "
                         "recognition and outputs as the daemon), print each transcript, exit 0 "
                         "only if all succeeded; safe while the daemon runs")  # fmt: skip
    transcribe.add_argument(
        "files", nargs="+", metavar="FILE", help="recordings (any format the daemon takes)"
    )
    render = command("render", "rewrite the configured outputs from saved NAME.json results "
                     "(no network)")  # fmt: skip
    render.add_argument("results", nargs="+", metavar="JSON", help="saved NAME.json files")
    generate = commands.add_parser(
        "config", help="config generate: print a commented config with every key and its default",
        description="Print a commented config with every key, its meaning and default, written "
        "from the one declaration of keys: `speechkit-watch config generate > config.yaml`.",
    )  # fmt: skip
    generate.add_argument("action", choices=["generate"], help="what to do with the config")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = build_parser().parse_args(argv)
    if arguments.command == "config":  # needs no config file: it writes one
        from daemon.config.generate import generate  # noqa: PLC0415 - only this command

        print(generate(), end="")
        return EXIT_OK
    try:
        settings = config.load(
            config.resolve_path(arguments.config),
            with_secrets=arguments.command not in OFFLINE_COMMANDS,
        )
    except config.ConfigError as error:
        for problem in error.problems:
            print(f"speechkit-watch: {problem}", file=sys.stderr)
        return EXIT_CONFIG
    handler = {
        "run": run_command,
        "check": check_command,
        "status": status_command,
        "retry": retry_command,
        "render": render_command,
        "transcribe": transcribe_command,
    }[arguments.command]
    try:
        code = handler(settings, arguments)
        sys.stdout.flush()  # inside the try: a reader that went away is seen here, not at exit
    except BrokenPipeError:
        return _reader_gone()
    return code


def _reader_gone() -> int:
    """`status | head`: the reader closed the pipe, which is normal; stop without a traceback.

    Python's own advice: point stdout at /dev/null so the flush at exit does not fail again.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return EXIT_FAILED


def run_command(settings: config.Config, arguments: argparse.Namespace) -> int:
    from daemon import crashpoints, service  # noqa: PLC0415 - keeps `status` light to start

    logs.configure(settings.log_level, settings.secrets())
    for warning in settings.warnings:
        logging.getLogger("daemon").warning("%s", warning)
    daemon = service.Service(settings, clock=crashpoints.wall_clock())  # time.time unless a test
    daemon.install_signal_handlers()
    try:
        return daemon.run()
    except service.StartupError as error:
        logging.getLogger("daemon").error("cannot start: %s", error)
        return EXIT_CONFIG
    except service.RestartNeededError as error:
        logging.getLogger("daemon").error("%s", error)
        return EXIT_FAILED


def check_command(settings: config.Config, arguments: argparse.Namespace) -> int:
    from daemon import checks  # noqa: PLC0415 - boto3 only for the commands that need it

    # Lines on stdout are the report; library warnings go to stderr, secrets masked in both.
    logs.configure("debug" if settings.log_level == "debug" else "warning", settings.secrets())
    hidden = settings.secrets()
    for warning in settings.warnings:
        print(checks.format_line(checks.Result(checks.WARNING, warning), hidden), flush=True)
    passed = True
    for result in checks.run_checks(settings):
        print(checks.format_line(result, hidden), flush=True)
        passed = passed and result.passed
    return EXIT_OK if passed else EXIT_FAILED


def _open_store(settings: config.Config) -> state.Store | None:
    try:
        return state.Store(settings.state_file, read_only=True)
    except state.StateFileError as error:
        print(f"speechkit-watch: {error}", file=sys.stderr)
        return None


def quota_report(
    store: state.Store, limits: config.Quota, now: float, api: str = "v2"
) -> dict[str, Any]:
    """Calls in the last hour and how long the submission backlog takes at the quota. Status
    checks have an hourly limit under API v2, a per-second one under v3 (the other is None)."""
    since = now - quota.WINDOW_SECONDS
    submissions = len(store.recent_calls("submit", since))
    backlog = store.backlog()
    return {
        "submissions_last_hour": submissions,
        "submissions_per_hour": limits.submissions_per_hour,
        "status_checks_last_hour": len(store.recent_calls("check", since)),
        "status_checks_per_hour": None if api == "v3" else limits.status_checks_per_hour,
        "status_checks_per_second": limits.status_checks_per_second if api == "v3" else None,
        "waiting_for_submission": backlog,
        "backlog_seconds": round(
            quota.backlog_seconds(backlog, limits.submissions_per_hour, submissions)
        ),
    }


def status_report(
    store: state.Store, limits: config.Quota, now: float, api: str = "v2"
) -> dict[str, Any]:
    """What `status` shows, as data."""
    # Counts first: rows only move on into `done` and `failed`, so every file the counts name
    # there is in the lists read after them (while the daemon runs).
    counts = store.counts()
    sending = uploads.read(store.path, now)
    in_progress = [
        {
            "path": row.path,
            "state": row.state,
            "age_seconds": round(now - row.created_at, 1),
            "operation_id": row.operation_id,
            "status_checks": row.checks,
            "next_step_in_seconds": None
            if row.due_at is None
            else round(max(0.0, row.due_at - now), 1),
            # When the result is expected: the next status check of a submitted file (the first
            # one is timed for the service's expected processing time).
            "expected_ready_at": transcripts.iso_time(row.due_at)
            if row.state == state.PENDING and row.due_at is not None
            else None,
            "expected_ready_in_seconds": round(max(0.0, row.due_at - now), 1)
            if row.state == state.PENDING and row.due_at is not None
            else None,
            "retries": row.attempts,
            "submissions": row.submissions,
            # Why it was submitted again, while it is in progress (a failure's reason is below).
            "resubmitted_because": row.message if row.submissions else None,
            # Why a file waits before its first step (it cannot be read yet): a person can help.
            "waiting_because": row.message if row.state == state.QUEUED else None,
            # A large upload's progress (percent and rate), while it runs.
            "upload": uploads.describe(sending[row.id])
            if row.state == state.UPLOADING and row.id in sending
            else None,
        }
        for row in store.in_states(state.ACTIVE_STATES)
    ]
    failed = [
        {
            "path": row.path,
            "stage": row.stage,
            "reason": row.message,
            "code": row.error_code,
            "submissions": row.submissions,
            "failed_at": None if row.finished_at is None else transcripts.iso_time(row.finished_at),
        }
        for row in store.in_states([state.FAILED])
    ]
    from daemon import webhooks  # noqa: PLC0415 - keeps `status` light to start

    undelivered = webhooks.undelivered_report(store.undelivered(), now)
    waiting, earliest = store.retention_pending()
    retention = {
        "waiting": waiting,
        "next_at": None if earliest is None else transcripts.iso_time(earliest),
    }
    return {"state_file": str(store.path), "counts": counts, "in_progress": in_progress,
            "failed": failed, "quota": quota_report(store, limits, now, api),
            "webhooks_undelivered": undelivered, "retention": retention}  # fmt: skip


def _submitted(item: dict[str, Any]) -> str:
    """How often a file was submitted, where that is worth a look (more than once)."""
    count = item["submissions"]
    return f"  submitted {count} times" if count > 1 else ""


def _absent(path: Path) -> bool:
    try:
        return not path.is_dir()
    except OSError:
        return False  # hidden from whoever runs `status` (permissions), not known to be missing


def missing_folders(folders: Sequence[config.WatchFolder]) -> list[dict[str, str]]:
    """Watch folders that are not there (a late mount, deleted, moved): the daemon waits."""
    return [
        {"path": str(folder.path), "key": f"watch[{index}].path"}
        for index, folder in enumerate(folders)
        if _absent(folder.path)
    ]


def status_command(settings: config.Config, arguments: argparse.Namespace) -> int:
    store = _open_store(settings)
    if store is None and settings.state_file.exists():
        return EXIT_FAILED  # there but unusable (not a database, unreadable): said above
    if store is None:
        report: dict[str, Any] = {"state_file": str(settings.state_file), "counts": {},
                                  "in_progress": [], "failed": [], "quota": None,
                                  "webhooks_undelivered": [], "retention": None}  # fmt: skip
    else:
        report = status_report(store, settings.quota, time.time(), settings.speechkit.api)
        store.close()
    report["waiting_for_folders"] = missing_folders(settings.watch)
    if arguments.json:
        print(json.dumps(report, ensure_ascii=False, indent=2))
        return EXIT_OK
    print(f"state file: {report['state_file']}")
    for folder in report["waiting_for_folders"]:
        print(f"waiting for watch folder {logs.shown(folder['path'])} ({folder['key']}): it is "
              "missing or not a folder; its files are transcribed once it is there")  # fmt: skip
    counts = report["counts"]
    print("  ".join(f"{name} {counts.get(name, 0)}" for name in state.ALL_STATES))
    usage = report["quota"]
    if usage:
        checks = usage["status_checks_last_hour"]
        if usage["status_checks_per_hour"] is not None:
            checks = f"{checks}/{usage['status_checks_per_hour']}"
        print(
            f"quota: {usage['submissions_last_hour']}/{usage['submissions_per_hour']} submissions "
            f"and {checks} status checks in the last hour"
            + (
                f" (status checks paced at {usage['status_checks_per_second']} per second)"
                if usage["status_checks_per_second"] is not None
                else ""
            )
        )
        if usage["backlog_seconds"]:
            print(
                f"backlog: {usage['waiting_for_submission']} file(s) wait for submission; at the "
                f"quota that takes about {logs.duration(usage['backlog_seconds'], precision=60)}"
            )
    retention = report.get("retention")
    if retention and retention["waiting"]:
        print(f"retention: the audio of {retention['waiting']} finished file(s) waits for "
              f"after_done/after_failed; the first is due {retention['next_at']}")  # fmt: skip
    if report["in_progress"]:
        print("in progress:")
        for item in report["in_progress"]:
            operation = f"  operation {item['operation_id']}" if item["operation_id"] else ""
            age = logs.duration(item["age_seconds"])
            ready = ""
            if item["expected_ready_in_seconds"] is not None:
                ready = (f"  expected ready {item['expected_ready_at']} (in about "
                         f"{logs.duration(item['expected_ready_in_seconds'])})")  # fmt: skip
            print(f"  {logs.shown(item['path'])}  {item['state']}  age {age}"
                  f"{operation}{ready}{_submitted(item)}")  # fmt: skip
            if item["resubmitted_because"]:
                print(f"      submitted again because {item['resubmitted_because']}")
            if item["waiting_because"]:
                print(f"      waiting: {item['waiting_because']}")
            if item["upload"]:
                sending_now = item["upload"]
                print(f"      uploading: {sending_now['percent']:.0f}% of "
                      f"{sending_now['size_bytes'] / 1e6:.1f} MB at "
                      f"{sending_now['bytes_per_second'] / 1e6:.1f} MB/s")  # fmt: skip
    if report["failed"]:
        print("failed:")
        for item in report["failed"]:
            print(f"  {logs.shown(item['path'])}  {item['stage']}: {item['reason']}"
                  f"{_submitted(item)}")  # fmt: skip
    if report["webhooks_undelivered"]:
        print("webhook events not delivered yet:")
        for item in report["webhooks_undelivered"]:
            print(
                f"  {item['event']} {logs.shown(item['file'])} to {item['receiver']}  age "
                f"{logs.duration(item['age_seconds'])}  {item['attempts']} attempt(s)  next in "
                f"{logs.duration(item['next_attempt_in_seconds'])}  delivery "
                f"{item['delivery_id']}"
                + (f"\n      last error: {item['last_error']}" if item["last_error"] else "")
            )
    return EXIT_OK


def still_refused(row: state.FileRow) -> str | None:
    """Why a file the local check refused would be refused again, or None if it now passes.

    Re-queueing an unchanged invalid file only fails it again; a file that was replaced, or
    whose permissions were fixed, passes and is re-queued."""
    from daemon import audio  # noqa: PLC0415 - only for files the local check refused

    path = Path(row.path)
    try:
        # The daemon's own check: Ogg Opus as it is, anything else converted (into a folder of
        # this command's, thrown away: the daemon converts again when it takes the file up).
        with tempfile.TemporaryDirectory(prefix="speechkit-watch-retry-") as scratch:
            audio.prepare(path, Path(scratch))
    except audio.AudioRefused as refusal:
        return refusal.reason
    except FileNotFoundError:
        return "the file is gone"
    except OSError as error:
        return f"cannot read: {(error.strerror or str(error)).lower()}"
    return None


def _settings_said(specification: str | None) -> str:
    if not specification:
        return "unknown"
    model, language = config.declaration.described(json.loads(specification))
    return f"model {model}, language {language}"


def retry_command(settings: config.Config, arguments: argparse.Namespace) -> int:
    try:
        store = state.Store(settings.state_file)
    except state.StateFileError as error:
        print(f"speechkit-watch: {error}", file=sys.stderr)
        return EXIT_FAILED
    status = EXIT_OK
    paths = [str(Path(path).absolute()) for path in arguments.paths]
    rows = store.in_states([state.FAILED], limit=2**31) if arguments.failed else []
    for path in paths:
        latest = store.latest_for_path(path)
        if latest is None:
            print(
                f"speechkit-watch: {logs.shown(path)} is not known to the daemon", file=sys.stderr
            )
            status = EXIT_FAILED
        elif latest.state != state.FAILED:
            print(f"speechkit-watch: {logs.shown(path)} is {latest.state}, not failed; left as is",
                  file=sys.stderr)  # fmt: skip
        else:
            rows.append(latest)
    changed = 0
    now = time.time()
    for row in rows:
        if row.stage == "check":
            reason = still_refused(row)
            if reason is not None:
                print(f"speechkit-watch: {logs.shown(row.path)} is still refused by the local "
                      f"check ({reason}); not re-queued: fix or replace the file, then retry",
                      file=sys.stderr)  # fmt: skip
                status = EXIT_FAILED
                continue
        specification = layout.current_specification(
            settings, row.path, row.folder, row.channels or 1
        )
        if store.apply(row, lifecycle.retried(now, specification), now):
            changed += 1
            was = (
                ""
                if row.specification in (None, specification)
                else f" (it failed with {_settings_said(row.specification)})"
            )
            print(f"re-queued {logs.shown(row.path)} with the config's current settings for its "
                  f"folder: {_settings_said(specification)}{was}")  # fmt: skip
    store.close()
    print(f"re-queued {changed} file(s)")
    return status


def transcribe_command(settings: config.Config, arguments: argparse.Namespace) -> int:
    from daemon import oneshot  # noqa: PLC0415 - boto3 only for the commands that need it

    quiet = "debug" if settings.log_level == "debug" else "warning"  # stdout is for transcripts
    logs.configure(quiet, settings.secrets())
    logging.getLogger("daemon.progress").setLevel(logging.INFO)  # large uploads: how far
    for warning in settings.warnings:
        logging.getLogger("daemon").warning("%s", warning)
    transcriber = oneshot.Transcriber(settings, out=sys.stdout, err=sys.stderr)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with it ignored
    try:
        return transcriber.run([Path(name) for name in arguments.files])
    except state.StateFileError as error:
        print(f"speechkit-watch: {error}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return _interrupted()


def _interrupted() -> int:
    """Ctrl-C in `transcribe`: one line, then out at once. A worker may be inside an upload or
    a call; its row is in the state file, so the next run carries the file on from there."""
    with contextlib.suppress(OSError, ValueError):
        sys.stdout.flush()
    with contextlib.suppress(OSError, ValueError):
        print("speechkit-watch: interrupted; the files resume where they were on the next run",
              file=sys.stderr)  # fmt: skip
        sys.stderr.flush()
    os._exit(EXIT_INTERRUPTED)  # not sys.exit: that would wait for the workers' calls to end


def read_result(path: Path) -> tuple[Any, str | None]:
    """A saved NAME.json result, or why the file given to `render` is none (one line)."""
    if path.is_dir():
        return None, "is a folder; give the saved NAME.json files in it"
    try:
        data = path.read_bytes()
    except OSError as error:
        return None, f"cannot read it: {(error.strerror or str(error)).lower()}"
    try:
        return json.loads(data.decode("utf-8")), None
    except (UnicodeDecodeError, ValueError):
        sibling = path.with_suffix(".json")
        hint = f" (its result would be {logs.shown(sibling)})" if sibling.is_file() else ""
        return None, f"not a JSON file; render reads the NAME.json a transcription saved{hint}"


def render_command(settings: config.Config, arguments: argparse.Namespace) -> int:
    status = EXIT_OK
    for name in arguments.results:
        result = Path(name)
        operation, unreadable = read_result(result)
        if unreadable is not None:
            print(f"speechkit-watch: {logs.shown(result)}: {unreadable}", file=sys.stderr)
            status = EXIT_FAILED
            continue
        if (
            result.name.endswith(".error.json")
            and isinstance(operation, dict)
            and ("stage" in operation)
        ):
            print(f"speechkit-watch: {logs.shown(result)}: the error file of a failed "
                  f"transcription (stage {operation['stage']}), not a result: there is nothing "
                  "to render; `speechkit-watch retry` the recording", file=sys.stderr)  # fmt: skip
            status = EXIT_FAILED
            continue
        problem = render.result_problem(operation)  # the daemon's own test before writing
        if problem is not None:
            print(f"speechkit-watch: {logs.shown(result)}: not a finished recognition result: "
                  f"{problem} (read as an {render.kind(operation)} result)",
                  file=sys.stderr)  # fmt: skip
            status = EXIT_FAILED
            continue
        documents = {
            layout.output_path(result, result.parent, extension): text
            for extension, text in render.documents(operation, settings.outputs).items()
            if extension != "json"  # the result itself, which is what is read here
        }
        try:
            files.write_all(documents)
        except OSError as error:
            print(f"speechkit-watch: {logs.shown(result)}: cannot write its outputs: {error}",
                  file=sys.stderr)  # fmt: skip
            status = EXIT_FAILED
            continue
        print(f"speechkit-watch: {logs.shown(result)}: read an {render.kind(operation)} result",
              file=sys.stderr)  # fmt: skip
        for path in documents:
            print(path)
    return status
