"""`make bench`: the daemon against the documentation's own loop, on the local stack, same run.

Starts SeaweedFS and the local SpeechKit-compatible server (processing time 10 s per audio minute
per channel, like the real service), then measures:

- the documentation-style loop (sequential: upload, submit, check every second, write) on a sample;
- the daemon on a burst of distinct small files dropped at once: files/s, the ratio, and the
  daemon's own CPU per file (user + system, with its children, read from /proc);
- drop-to-transcript latency beyond settle time and the server's processing time (median, p95),
  on files dropped one by one;
- status checks per operation (median, p95) and submissions per file;
- a folder's history: 100,000 finished files in the folder and the state file: time to READY and
  to the end of the first scan, peak RSS, CPU per rescan; the same folder polled (no inotify):
  CPU per polling pass and peak RSS;
- a 4-hour, 1 GiB Ogg Opus recording (made by bench/longopus.py into a temporary folder): from
  the drop to the submission against a plain boto3 `upload_file` of it to the same server, the
  daemon's peak RSS, and its upload progress in the log and in `status`.

Prints a table beside the previous figures (bench/results.json) and writes bench/results.json.
The machine is shared and noisy: throughput figures are medians of several runs, ratios are taken
within the same run, and CPU is CPU time, not wall time. `--quick` runs one of each at a smaller
scale and writes nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import secrets
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import botocore.config
import requests

PROJECT_ROOT = Path(__file__).resolve().parent.parent
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

import longopus  # noqa: E402  # beside this script

from daemon import state  # noqa: E402
from daemon.audio import oggopus  # noqa: E402
from speechkit_local import devstack  # noqa: E402
from tests.fixtures_audio import opus_tags_packet, read_fixture, replace_tags  # noqa: E402

SECONDS_PER_MINUTE = 10.0  # the real service's documented speed
SETTLE_SECONDS = 1.0
BURST_FILES = 300
BASELINE_FILES = 8  # the sequential loop takes ~1 s per file; a few suffice for its rate
TRICKLE_FILES = 20
TRICKLE_PAUSE_SECONDS = 0.5
HISTORY_FILES = 100_000
QUICK_HISTORY_FILES = 20_000
QUICK_BIG_FILE_BYTES = 256 * 1024**2
LINKS_PER_SOURCE = 50_000  # ext4 allows 65,000 hard links to one file
RESCAN_PROBE_SECONDS = 4.0  # the history run rescans this often, to measure a rescan's CPU
RESCANS_MEASURED = 4
POLLING_SECONDS = 2.0  # daemon.watching.POLLING_INTERVAL_SECONDS
POLLS_MEASURED = 5
BIG_FILE_BYTES = 1024**3 - 1024**2  # just under the service's 1 GiB object limit
BIG_FILE_SECONDS = 4 * 3600.0  # the service's limit of audio per recognition
BIG_SETTLE_SECONDS = 0.5
WAIT_SECONDS = 600.0
SCAN_POLL_SECONDS = 0.02  # how often the bench looks for new transcripts
SOURCE_FIXTURE = "mono.ogg"
RESULTS = PROJECT_ROOT / "bench" / "results.json"


def variant(index: int, base: bytes) -> bytes:
    """The sample with a unique comment: distinct bytes, same audio, same transcript."""
    fields = [b"TRANSCRIPT=Hello from the watch folder. This is a test recording.",
              f"BENCH_ID={index}".encode()]  # fmt: skip
    return replace_tags(base, opus_tags_packet("speechkit-watch bench", fields))


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    position = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[position]


def processing_seconds(data: bytes) -> float:
    info = oggopus.inspect_bytes(data)
    return info.duration_seconds / 60.0 * SECONDS_PER_MINUTE * info.channels


@dataclass
class Stack:
    storage: devstack.SeaweedFS
    server: devstack.LocalServerProcess
    api_key: str
    work: Path
    runs: int = 0
    samples: list[bytes] = field(default_factory=list)

    def client(self) -> Any:
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.storage.endpoint_url,
            aws_access_key_id=self.storage.access_key_id,
            aws_secret_access_key=self.storage.secret_access_key,
            region_name=self.storage.region,
            config=botocore.config.Config(
                s3={"addressing_style": "path"},
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        )


@contextlib.contextmanager
def local_stack(work: Path) -> Iterator[Stack]:
    api_key = "bench-" + secrets.token_hex(8)
    with devstack.SeaweedFS(work / "weed") as storage:
        server = devstack.LocalServerProcess(
            api_keys=[api_key], storage=storage, seconds_per_minute=SECONDS_PER_MINUTE,
            directory=work / "server",
        )  # fmt: skip
        with server:
            yield Stack(storage, server, api_key, work)


# -- the documentation's loop ---------------------------------------------------------------------


def documentation_loop(stack: Stack, files: list[Path]) -> float:
    """Files/s of: upload, submit, check once a second until done, write; one file at a time."""
    client = stack.client()
    session = requests.Session()
    headers = {"Authorization": f"Api-Key {stack.api_key}"}
    started = time.monotonic()
    for path in files:
        key = f"docs-loop/{path.name}"
        client.upload_file(str(path), stack.storage.bucket, key)
        link = client.generate_presigned_url(
            "get_object", Params={"Bucket": stack.storage.bucket, "Key": key}, ExpiresIn=3600
        )
        body = {"config": {"specification": {"languageCode": "ru-RU"}}, "audio": {"uri": link}}
        operation = session.post(stack.server.recognize_url, json=body, headers=headers,
                                 timeout=30).json()  # fmt: skip
        while not operation.get("done"):
            time.sleep(1.0)
            operation = session.get(f"{stack.server.operations_url}/{operation['id']}",
                                    headers=headers, timeout=30).json()  # fmt: skip
        chunks = operation.get("response", {}).get("chunks", [])
        path.with_suffix(".txt").write_text(
            "".join(chunk["alternatives"][0]["text"] + "\n" for chunk in chunks)
        )
        path.with_suffix(".json").write_text(json.dumps(operation, ensure_ascii=False))
    return len(files) / (time.monotonic() - started)


# -- the daemon -----------------------------------------------------------------------------------


class Watcher(threading.Thread):
    """Notes the moment each NAME.txt appears (the bench's view of a user's view)."""

    def __init__(self, folder: Path, expected: int) -> None:
        super().__init__(daemon=True)
        self.folder = folder
        self.expected = expected
        self.seen: dict[str, float] = {}
        self.done = threading.Event()

    def run(self) -> None:
        deadline = time.monotonic() + WAIT_SECONDS
        while len(self.seen) < self.expected and time.monotonic() < deadline:
            now = time.monotonic()
            with os.scandir(self.folder) as entries:
                for entry in entries:
                    if entry.name.endswith(".txt") and entry.name not in self.seen:
                        self.seen[entry.name] = now
            time.sleep(SCAN_POLL_SECONDS)
        self.done.set()


class DaemonRun:
    def __init__(self, stack: Stack, name: str, extra: dict[str, Any] | None = None) -> None:
        self.folder = stack.work / name / "inbox"
        self.folder.mkdir(parents=True)
        self.staging = stack.work / name / "staging"
        self.staging.mkdir()
        self.state_file = stack.work / name / "state.db"
        self.log_path = stack.work / name / "daemon.log"
        bucket = stack.storage.create_bucket(f"bench-{name}-{secrets.token_hex(3)}")
        self.config = devstack.write_daemon_config(
            stack.work / name / "config.yaml", watch_dirs=[self.folder], storage=stack.storage,
            speechkit_url=stack.server.url, api_key=stack.api_key, state_file=self.state_file,
            settle_seconds=SETTLE_SECONDS, bucket=bucket,
            extra={"polling": {"seconds_per_minute": SECONDS_PER_MINUTE}, "log_level": "info",
                   **(extra or {})},
        )  # fmt: skip
        self.env = {**os.environ, **devstack.daemon_env(stack.storage, stack.api_key)}
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, notify: str | None = None) -> float:
        env = dict(self.env)
        if notify:
            env["NOTIFY_SOCKET"] = notify
        started = time.monotonic()
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "daemon", "run", "-c", str(self.config)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env, cwd=PROJECT_ROOT,
            )  # fmt: skip
        return started

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)

    def rows(self) -> list[tuple[int, int]]:
        db = sqlite3.connect(self.state_file)
        try:
            return list(db.execute("SELECT checks, submissions FROM files WHERE state = 'done'"))
        finally:
            db.close()


def wait_for_ready(run: DaemonRun, notify_socket: socket.socket | None) -> None:
    """READY=1 on the notify socket when the daemon sends it; else its first log line."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if notify_socket is not None:
            try:
                if b"READY=1" in notify_socket.recv(4096):
                    return
            except TimeoutError:
                pass
        elif "started:" in run.log_path.read_text(errors="replace"):
            return
        assert run.process is not None
        if run.process.poll() is not None:
            raise RuntimeError(f"daemon exited:\n{run.log_path.read_text(errors='replace')}")
        if notify_socket is None:
            time.sleep(0.01)
    raise RuntimeError("the daemon did not become ready")


def burst(stack: Stack, index: int, concurrency: int) -> dict[str, float]:
    run = DaemonRun(stack, f"burst{index}-c{concurrency}", {"concurrency": concurrency})
    for number in range(BURST_FILES):
        (run.staging / f"call{number:04d}.ogg").write_bytes(
            stack.samples[index * BURST_FILES + number]
        )
    run.start()
    wait_for_ready(run, None)
    assert run.process is not None
    time.sleep(1.0)  # the start-up scan and sweeps are not the burst's
    watcher = Watcher(run.folder, BURST_FILES)
    watcher.start()
    cpu_before = cpu_seconds(run.process.pid)
    dropped = time.monotonic()
    for path in sorted(run.staging.iterdir()):
        os.rename(path, run.folder / path.name)  # renamed in: complete at once
    watcher.done.wait(WAIT_SECONDS)
    cpu = cpu_seconds(run.process.pid) - cpu_before
    run.stop()
    if len(watcher.seen) < BURST_FILES:
        raise RuntimeError(f"only {len(watcher.seen)} of {BURST_FILES} transcripts appeared")
    elapsed = max(watcher.seen.values()) - dropped
    checks = [float(checks) for checks, _ in run.rows()]
    submissions = stack.server.stats()["submissions"]
    return {"files_per_second": BURST_FILES / elapsed, "seconds": elapsed,
            "cpu_ms_per_file": cpu / BURST_FILES * 1000,
            "checks_median": statistics.median(checks), "checks_p95": percentile(checks, 0.95),
            "submissions_total": float(submissions)}  # fmt: skip


def trickle(stack: Stack) -> list[float]:
    """Latency beyond settle and processing time, for files dropped one by one."""
    run = DaemonRun(stack, "trickle")
    run.start()
    wait_for_ready(run, None)
    watcher = Watcher(run.folder, TRICKLE_FILES)
    watcher.start()
    dropped: dict[str, tuple[float, float]] = {}
    for number in range(TRICKLE_FILES):
        data = stack.samples[-(number + 1)]
        staged = run.staging / f"note{number:02d}.ogg"
        staged.write_bytes(data)
        dropped[f"note{number:02d}.txt"] = (time.monotonic(), processing_seconds(data))
        os.rename(staged, run.folder / staged.name)
        time.sleep(TRICKLE_PAUSE_SECONDS)
    watcher.done.wait(WAIT_SECONDS)
    run.stop()
    return [
        watcher.seen[name] - at - SETTLE_SECONDS - processing
        for name, (at, processing) in dropped.items()
        if name in watcher.seen
    ]


def history(stack: Stack, files: int) -> dict[str, float]:
    """A folder and state file with `files` finished files: start-up to READY and to the end of
    the first scan, peak RSS, idle CPU and CPU per rescan (rescans every RESCAN_PROBE_SECONDS);
    then the same folder polled (no inotify, as on a network mount): CPU per polling pass."""
    run = DaemonRun(stack, "history", {"rescan_seconds": RESCAN_PROBE_SECONDS})
    fill_history(run, files)
    notify_path = str(stack.work / "notify.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(notify_path)
    listener.settimeout(0.05)
    try:
        started = run.start(notify=notify_path)
        wait_for_ready(run, listener)
        ready = time.monotonic() - started
        assert run.process is not None
        pid = run.process.pid
        deadline = time.monotonic() + 60
        while "first scan done" not in run.log_path.read_text(errors="replace"):
            if time.monotonic() > deadline:
                raise RuntimeError("the first scan did not finish")
            time.sleep(0.01)
        scanned = time.monotonic() - started
        time.sleep(2.0)  # let the start-up sweeps finish
        rescan_cpu = cpu_over(pid, RESCAN_PROBE_SECONDS * RESCANS_MEASURED) / RESCANS_MEASURED
        rss = peak_rss_mb(pid)
    finally:
        run.stop()
        listener.close()
    polled = DaemonRun(stack, "history-polled", {
        "watch": [{"path": str(run.folder), "polling": True}], "state_file": str(run.state_file),
    })  # fmt: skip
    polled.start()
    try:
        wait_for_ready(polled, None)
        assert polled.process is not None
        time.sleep(2 * POLLING_SECONDS)  # the observer's first snapshot and the first scan
        window = POLLING_SECONDS * POLLS_MEASURED
        poll_cpu = cpu_over(polled.process.pid, window) / POLLS_MEASURED
        polled_rss = peak_rss_mb(polled.process.pid)
    finally:
        polled.stop()
    return {"ready_seconds": ready, "scanned_seconds": scanned, "peak_rss_mb": rss,
            "rescan_cpu_ms": rescan_cpu * 1000, "poll_cpu_ms": poll_cpu * 1000,
            "poll_cpu_percent": poll_cpu / POLLING_SECONDS * 100,
            "polled_peak_rss_mb": polled_rss}  # fmt: skip


def fill_history(run: DaemonRun, files: int) -> None:
    """`files` finished files in the folder (hard links of a few sources) and the state file."""
    store = state.Store(run.state_file)
    store.close()
    db = sqlite3.connect(run.state_file)
    rows = []
    for number in range(files):
        if number % LINKS_PER_SOURCE == 0:  # a file system allows so many links to one file
            source = run.staging / f"source{number}.ogg"
            source.write_bytes(read_fixture(SOURCE_FIXTURE))
            found = source.stat()
        path = run.folder / f"done{number:06d}.ogg"
        os.link(source, path)  # same size and mtime; hard links keep the disk use small
        rows.append((os.fsencode(path), os.fsencode(run.folder), found.st_size,
                     found.st_mtime_ns, "done", 0.0, 0.0))  # fmt: skip
    db.executemany(
        "INSERT INTO files (path, folder, size, mtime_ns, state, created_at, updated_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    db.commit()
    db.close()


def cpu_over(pid: int, seconds: float) -> float:
    """CPU seconds (user + system) the process spends in the next `seconds`."""
    before = cpu_seconds(pid)
    time.sleep(seconds)
    return cpu_seconds(pid) - before


def big_file(stack: Stack, source: Path) -> dict[str, Any]:
    """The 4-hour, 1 GiB recording: plain boto3 `upload_file` of it (before and after), then the
    daemon from the drop to the submission, its peak RSS, and the upload progress it shows in
    its log and in `status`. A server of its own, stopped at once after the submission, keeps
    the recognition of 4 hours of audio out of the other measurements."""
    client = stack.client()
    size = source.stat().st_size

    def plain_upload(name: str) -> float:
        started = time.monotonic()
        client.upload_file(str(source), stack.storage.bucket, f"baseline/{name}.ogg")
        elapsed = time.monotonic() - started
        client.delete_object(Bucket=stack.storage.bucket, Key=f"baseline/{name}.ogg")
        return elapsed

    baselines = [plain_upload("before")]
    server = devstack.LocalServerProcess(
        api_keys=[stack.api_key], storage=stack.storage, seconds_per_minute=SECONDS_PER_MINUTE,
        directory=stack.work / "big-server",
    )  # fmt: skip
    with server:
        own = Stack(stack.storage, server, stack.api_key, stack.work)
        run = DaemonRun(own, "big", {"settle_seconds": BIG_SETTLE_SECONDS})
        staged = run.staging / "four-hours.ogg"
        os.replace(source, staged)
        run.start()
        wait_for_ready(run, None)
        assert run.process is not None
        pid = run.process.pid
        cpu_before = cpu_seconds(pid)
        dropped = time.monotonic()
        os.rename(staged, run.folder / staged.name)
        status_upload: dict[str, Any] | None = None
        rss_samples: list[float] = []
        deadline = dropped + WAIT_SECONDS
        while time.monotonic() < deadline:
            text = run.log_path.read_text(errors="replace")
            if "submitted " in text:
                break
            if status_upload is None and "% of" in text:
                status_upload = upload_in_status(run)
            rss_samples.append(current_rss_mb(pid))
            time.sleep(0.05)
        else:
            raise RuntimeError(f"the big file was not submitted:\n{text[-2000:]}")
        submitted = time.monotonic() - dropped
        cpu = cpu_seconds(pid) - cpu_before
        peak = peak_rss_mb(pid)
        run.stop()
        os.replace(run.folder / staged.name, source)
    baselines.append(plain_upload("after"))
    progress = [line for line in text.splitlines() if "uploading " in line and "% of" in line]
    return {"size_bytes": size, "plain_upload_seconds": [round(b, 2) for b in baselines],
            "drop_to_submission_seconds": round(submitted, 2),
            "settle_seconds": BIG_SETTLE_SECONDS,
            "ratio": round(submitted / statistics.mean(baselines), 2),
            "daemon_cpu_seconds": round(cpu, 2), "peak_rss_mb": round(peak, 1),
            "max_sampled_rss_mb": round(max(rss_samples, default=0.0), 1),
            "progress_log_lines": len(progress),
            "progress_in_status": status_upload}  # fmt: skip


def upload_in_status(run: DaemonRun) -> dict[str, Any] | None:
    """What `status --json` says of the upload in progress, if anything."""
    answer = subprocess.run(
        [sys.executable, "-m", "daemon", "status", "--json", "-c", str(run.config)],
        capture_output=True, text=True, env=run.env, cwd=PROJECT_ROOT, timeout=60, check=False,
    )  # fmt: skip
    try:
        report = json.loads(answer.stdout)
    except ValueError:
        return None
    for item in report.get("in_progress", []):
        if item.get("upload"):
            return dict(item["upload"])
    return None


def current_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and of its children it has waited for."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(value) for value in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="repetitions of the throughput runs")
    parser.add_argument("--concurrency", type=int, default=4, help="the daemon's concurrency")
    parser.add_argument("--quick", action="store_true",
                        help="one run, 20,000 files of history, a 256 MiB big file; results are "
                             "printed, not written")  # fmt: skip
    arguments = parser.parse_args()
    runs = 1 if arguments.quick else arguments.runs
    history_files = QUICK_HISTORY_FILES if arguments.quick else HISTORY_FILES
    big_bytes = QUICK_BIG_FILE_BYTES if arguments.quick else BIG_FILE_BYTES
    previous = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    base = read_fixture(SOURCE_FIXTURE)
    with tempfile.TemporaryDirectory(prefix="skw-bench-") as temporary:
        work = Path(temporary)
        with local_stack(work) as stack:
            stack.samples = [variant(n, base) for n in range(BURST_FILES * runs + TRICKLE_FILES)]
            baseline_rates, burst_results = [], []
            for index in range(runs):
                loop_dir = work / f"docs-loop{index}"
                loop_dir.mkdir()
                files = []
                for number in range(BASELINE_FILES):
                    path = loop_dir / f"doc{number}.ogg"
                    path.write_bytes(stack.samples[index * BURST_FILES + BURST_FILES - 1 - number])
                    files.append(path)
                baseline_rates.append(documentation_loop(stack, files))
                before = stack.server.stats()["submissions"]
                result = burst(stack, index, arguments.concurrency)
                result["submissions_per_file"] = (
                    result.pop("submissions_total") - before
                ) / BURST_FILES
                burst_results.append(result)
                print(f"run {index + 1}: docs loop {baseline_rates[-1]:.2f} files/s, "
                      f"daemon {result['files_per_second']:.1f} files/s, "
                      f"{result['cpu_ms_per_file']:.1f} ms CPU per file", flush=True)  # fmt: skip
            latencies = trickle(stack)
            boot = history(stack, history_files)
            print(f"history of {history_files} files: READY in {boot['ready_seconds']:.2f} s, "
                  f"{boot['rescan_cpu_ms']:.0f} ms CPU per rescan", flush=True)  # fmt: skip
            big_source = work / "four-hours.ogg"
            longopus.write_long_opus(base, big_source, size_bytes=big_bytes,
                                     seconds=BIG_FILE_SECONDS)  # fmt: skip
            big = big_file(stack, big_source)
            big_source.unlink()
    baseline = statistics.median(baseline_rates)
    daemon_rate = statistics.median(r["files_per_second"] for r in burst_results)
    ratios = [r["files_per_second"] / b for r, b in zip(burst_results, baseline_rates, strict=True)]
    results = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform(), "when": time.strftime("%Y-%m-%d")},
        "docs_loop_files_per_second": round(baseline, 3),
        "daemon_files_per_second": round(daemon_rate, 2),
        "ratio_median": round(statistics.median(ratios), 1),
        "burst_files": BURST_FILES,
        "concurrency": arguments.concurrency,
        "daemon_cpu_ms_per_file": round(statistics.median(r["cpu_ms_per_file"] for r in burst_results), 1),
        "latency_beyond_settle_and_processing_median_s": round(statistics.median(latencies), 3),
        "latency_beyond_settle_and_processing_p95_s": round(percentile(latencies, 0.95), 3),
        "status_checks_per_operation_median": statistics.median(r["checks_median"] for r in burst_results),
        "status_checks_per_operation_p95": max(r["checks_p95"] for r in burst_results),
        "submissions_per_file": round(statistics.median(r["submissions_per_file"] for r in burst_results), 3),
        "startup_files": history_files,
        "startup_ready_seconds": round(boot["ready_seconds"], 2),
        "startup_first_scan_done_seconds": round(boot["scanned_seconds"], 2),
        "peak_rss_mb_with_history": round(boot["peak_rss_mb"], 1),
        "rescan_cpu_ms": round(boot["rescan_cpu_ms"]),
        "polled_rescan_cpu_ms": round(boot["poll_cpu_ms"]),
        "polled_cpu_percent": round(boot["poll_cpu_percent"], 1),
        "polled_peak_rss_mb": round(boot["polled_peak_rss_mb"], 1),
        "big_file_bytes": big["size_bytes"],
        "big_file_plain_upload_seconds": round(statistics.mean(big["plain_upload_seconds"]), 2),
        "big_file_drop_to_submission_seconds": big["drop_to_submission_seconds"],
        "big_file_ratio": big["ratio"],
        "big_file_settle_seconds": big["settle_seconds"],
        "big_file_daemon_cpu_seconds": big["daemon_cpu_seconds"],
        "big_file_peak_rss_mb": big["peak_rss_mb"],
        "big_file_progress_log_lines": big["progress_log_lines"],
        "big_file_progress_in_status": big["progress_in_status"] is not None,
        "runs": runs,
        "quick": arguments.quick,
    }  # fmt: skip
    if not arguments.quick:
        RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print_table(results, previous)
    return 0


def _figure(results: dict[str, Any], key: str, unit: str = "") -> str:
    value = results.get(key)
    return "-" if value is None else f"{value}{unit}"


TABLE_ROWS = (  # (label, key, unit)
    ("documentation-style loop", "docs_loop_files_per_second", " files/s"),
    ("daemon, 300 files at once", "daemon_files_per_second", " files/s"),
    ("ratio (median of runs)", "ratio_median", "x"),
    ("daemon CPU per file (user+sys), burst", "daemon_cpu_ms_per_file", " ms"),
    ("latency beyond settle + processing, median", "latency_beyond_settle_and_processing_median_s", " s"),
    ("latency beyond settle + processing, p95", "latency_beyond_settle_and_processing_p95_s", " s"),
    ("status checks per operation, median", "status_checks_per_operation_median", ""),
    ("submissions per file", "submissions_per_file", ""),
    ("finished files in folder and state file", "startup_files", ""),
    ("start-up: READY", "startup_ready_seconds", " s"),
    ("start-up: first scan done", "startup_first_scan_done_seconds", " s"),
    ("peak RSS with that history", "peak_rss_mb_with_history", " MB"),
    ("CPU per rescan of that folder", "rescan_cpu_ms", " ms"),
    ("same folder polled: CPU per polling pass (2 s)", "polled_rescan_cpu_ms", " ms"),
    ("same folder polled: CPU", "polled_cpu_percent", " %"),
    ("same folder polled: peak RSS", "polled_peak_rss_mb", " MB"),
    ("4-hour recording: bytes", "big_file_bytes", ""),
    ("4-hour recording: plain boto3 upload_file", "big_file_plain_upload_seconds", " s"),
    ("4-hour recording: drop to submission", "big_file_drop_to_submission_seconds", " s"),
    ("4-hour recording: ratio to upload_file", "big_file_ratio", "x"),
    ("4-hour recording: daemon peak RSS", "big_file_peak_rss_mb", " MB"),
    ("4-hour recording: progress lines in the log", "big_file_progress_log_lines", ""),
    ("4-hour recording: progress in status", "big_file_progress_in_status", ""),
)  # fmt: skip
# Earlier results named some figures differently.
_PREVIOUS_NAMES = {"peak_rss_mb_with_history": "peak_rss_mb_with_20000_tracked"}


def print_table(results: dict[str, Any], previous: dict[str, Any]) -> None:
    rows = [("measure", "now", "previous")]
    for label, key, unit in TABLE_ROWS:
        before = _figure(previous, key, unit)
        if before == "-" and key in _PREVIOUS_NAMES:
            before = _figure(previous, _PREVIOUS_NAMES[key], unit)
        rows.append((label, _figure(results, key, unit), before))
    widths = [max(len(row[column]) for row in rows) for column in range(3)]
    for index, row in enumerate(rows):
        print("| " + " | ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
              + " |")  # fmt: skip
        if index == 0:
            print("|" + "|".join("-" * (width + 2) for width in widths) + "|")
    for name, figures in (("now", results), ("previous", previous)):
        machine = figures.get("machine")
        if machine:
            print(f"{name}: {machine['cpus']} CPUs, Python {machine['python']}, "
                  f"{machine['platform']}, {machine['when']}, {figures.get('runs')} runs")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
