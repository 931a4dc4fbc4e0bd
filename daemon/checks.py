"""The probes of `speechkit-watch check`: does this config work, before the service starts?

Each probe returns `Result` rows (ok / PROBLEM and what to do / skip); `cli` prints them one
line each as they come. The probes use the daemon's own adapters (`storage.ObjectStore`,
`recognition.RecognitionClient`, `credentials`) so that what passes here works in the daemon.
They leave nothing behind: test files and the test object are removed again. The daemon need
not run, and may: nothing here touches its state file or its objects.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from daemon import inotify_limits, logs, metrics, storage, transport
from daemon.config import Config, Hook, SpeechKit, Storage
from daemon.layout import OWN_TEMP_SUFFIX
from daemon.speechkit import backends, v3
from daemon.speechkit import credentials as credentials_module
from daemon.speechkit import v2 as recognition

OK, PROBLEM, SKIP, WARNING = "ok", "PROBLEM", "skip", "warning"
STATUS_WIDTH = 9  # "PROBLEM" and two spaces: the messages line up
PROBE_BYTES = b"speechkit-watch check: this object is deleted at once\n"
PROBE_SHA256 = hashlib.sha256(PROBE_BYTES).hexdigest()
PROBE_KEY_NAME = "speechkit-watch-check-"  # never matches the daemon's own sha256 keys
OPERATION_ID_ALPHABET = "abcdefghijklmnopqrstuv0123456789"  # what real operation ids are made of
OPERATION_ID_LENGTH = 20  # "e03" + 17, shaped like a real id so only "not found" can answer

# The role that lets the keys do all the daemon does: put, get, list and delete objects.
# storage.uploader "does not allow you to delete objects" (Yandex's role reference).
STORAGE_ROLE = "storage.editor"
# Codes that mean the keys themselves are wrong, not that their role lacks a permission.
STORAGE_KEY_CODES = frozenset({"InvalidAccessKeyId", "SignatureDoesNotMatch"})

# What to check when storage refuses a request with this error code.
STORAGE_ADVICE = {
    "InvalidAccessKeyId": "the bucket refused our keys ({code}): check storage.access_key_id",
    "SignatureDoesNotMatch": "the bucket refused our keys ({code}): check "
    "storage.secret_access_key",
    "AccessDenied": "the keys were refused access ({code}): check both storage keys, and give "
    f"their service account the role {STORAGE_ROLE} on the bucket",
    "Forbidden": "the keys were refused access ({code}): check storage.access_key_id and "
    "storage.secret_access_key",
    "NoSuchBucket": "there is no such bucket ({code}): check storage.bucket, or create it",
}
_STORAGE_CODE = re.compile(r"refused the request: (\S+) \(HTTP")


@dataclass(frozen=True)
class Result:
    status: str  # OK, PROBLEM, SKIP or WARNING
    message: str

    @property
    def passed(self) -> bool:
        return self.status != PROBLEM


def format_line(result: Result, hidden: Iterable[str] = ()) -> str:
    """`ok       watch folder ...`; any secret that slipped into a message is masked."""
    message = result.message
    for secret in sorted(hidden, key=len, reverse=True):
        if len(secret) >= logs.MIN_SECRET_LENGTH:
            message = message.replace(secret, "***")
    return f"{result.status:<{STATUS_WIDTH}}{message}".rstrip()


def storage_problem(error: storage.StorageError, settings: Storage) -> str:
    """What a storage error means for the operator, naming the key to check."""
    text = str(error)
    match = _STORAGE_CODE.search(text)
    if match is not None and match.group(1) in STORAGE_ADVICE:
        return "storage: " + STORAGE_ADVICE[match.group(1)].format(code=match.group(1))
    if transport.PROXY_REFUSED in text:
        return (
            f"storage: {text}: the proxy (HTTPS_PROXY or ALL_PROXY) does not let this host "
            f"reach {settings.endpoint_url}; allow it there, or name the host in NO_PROXY"
        )
    if transport.PROXY_WANTS_CREDENTIALS in text:
        return (
            f"storage: {text}: give them in the proxy's URL (HTTPS_PROXY or ALL_PROXY: "
            "http://user:password@proxy:port)"
        )
    if "unreachable" in text:
        return f"storage: {text}: check storage.endpoint_url ({settings.endpoint_url})"
    return f"storage: {text}: check the storage section"


def refused_problem(
    error: storage.StorageError, settings: Storage, doing: str, needed_for: str
) -> str:
    """A write or delete the listing keys were refused: the role to grant, else as usual."""
    match = _STORAGE_CODE.search(str(error))
    code = match.group(1) if match is not None else None
    if not error.auth or code in STORAGE_KEY_CODES:
        return storage_problem(error, settings)
    return (
        f"storage: {doing} was refused ({code or error}): give the service account of "
        f"storage.access_key_id the role {STORAGE_ROLE} on bucket {settings.bucket} "
        f"({needed_for})"
    )


def api_problem(error: recognition.ApiError, key: str, url_key: str, url: str) -> Result:
    """The verdict on a probe's refusal; OK only when the refusal has the API's own shape.

    The probes ask for what cannot succeed (an operation that does not exist, a recognition
    without audio), so the API's JSON error with a gRPC code (404/5, 400/3) proves that `url`
    is the API and that it accepted the credentials. Anything else names the URL to fix.
    """
    if error.kind in (recognition.NOT_FOUND, recognition.PERMANENT):
        return Result(OK, f"credentials: the recognition API at {url} accepts {key}")
    if error.status == 403:
        return Result(
            PROBLEM,
            f"credentials: the recognition API knows {key} but refused it ({error}): give the "
            "service account the role ai.speechkit-stt.user",
        )
    if error.kind == recognition.AUTH:
        return Result(
            PROBLEM,
            f"credentials: the recognition API refused {key} ({error}): check {key}; it must "
            "belong to a service account",
        )
    if error.kind == recognition.NOT_THE_API:
        return Result(
            PROBLEM,
            f"{url_key}: {url} is not the SpeechKit API ({error}): check {url_key}",
        )
    return Result(
        PROBLEM,
        f"{url_key}: the recognition API at {url} did not answer usefully ({error}): check "
        f"{url_key} and the network",
    )


def nearest_existing(path: Path) -> Path:
    """The path itself or the closest ancestor that exists (where `mkdir -p` would start)."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path("/")


def try_write(folder: Path) -> str | None:
    """Create and remove a hidden temp file in `folder`; None if that worked, else the reason.

    The name is the daemon's own temp name: no watch pattern matches it, and a leftover is
    removed at the daemon's next start.
    """
    try:
        descriptor, name = tempfile.mkstemp(prefix=".", suffix=OWN_TEMP_SUFFIX, dir=folder)
    except OSError as error:
        return error.strerror or type(error).__name__
    os.close(descriptor)
    with contextlib.suppress(OSError):
        os.unlink(name)
    return None


# ---------------------------------------------------------------------------------------------
# Folders and the state file


def check_folder(path: Path, what: str, key_path: str, *, writable: bool) -> Result:
    if not path.exists():
        return Result(PROBLEM, f"{what} {path} does not exist: create it, or fix {key_path}")
    if not path.is_dir():
        return Result(PROBLEM, f"{what} {path} is not a folder: fix {key_path}")
    try:
        os.listdir(path)
    except OSError as error:
        return Result(PROBLEM, f"{what} {path} cannot be read ({error.strerror}): fix its "
                      "permissions for the user the service runs as")  # fmt: skip
    if not writable:
        return Result(OK, f"{what} {path} exists and is readable")
    reason = try_write(path)
    if reason is not None:
        return Result(PROBLEM, f"{what} {path} is not writable ({reason}): the daemon writes "
                      "there; fix its permissions for the user the service runs as")  # fmt: skip
    return Result(OK, f"{what} {path} exists and is writable")


def check_output_dir(path: Path, key_path: str) -> Result:
    """An output folder may be missing (the daemon creates it) if it can be created."""
    if path.exists():
        return check_folder(path, "output folder", key_path, writable=True)
    start = nearest_existing(path.parent)
    reason = try_write(start) if start.is_dir() else "not a folder"
    if reason is not None:
        return Result(PROBLEM, f"output folder {path} does not exist and cannot be created in "
                      f"{start} ({reason}): create it, or fix {key_path}")  # fmt: skip
    return Result(OK, f"output folder {path} does not exist yet; the daemon will create it")


def check_folders(config: Config) -> list[Result]:
    results = []
    for index, folder in enumerate(config.watch):
        # Outputs go beside the audio unless output_dir says otherwise; moving or deleting
        # finished audio also needs write access to the watch folder.
        writable = (
            folder.output_dir is None
            or folder.after_done != "keep"
            or folder.after_failed != "keep"
        )
        results.append(
            check_folder(folder.path, "watch folder", f"watch[{index}].path", writable=writable)
        )
        if folder.output_dir is not None:
            results.append(check_output_dir(folder.output_dir, f"watch[{index}].output_dir"))
    return results


def check_inotify(config: Config, proc_sys: Path = inotify_limits.PROC_SYS) -> list[Result]:
    """The kernel's inotify limits against the watches and instances the config needs (a
    folder that runs out is polled instead: it works, at the cost of a listing every 2 s)."""
    watched = [folder for folder in config.watch if not folder.polling]
    if not watched:
        return []
    results = []
    needs = (
        (inotify_limits.WATCHES_SYSCTL, "watches",
         inotify_limits.needed_watches((folder.path, folder.recursive) for folder in watched)),
        (inotify_limits.INSTANCES_SYSCTL, "instances", len(watched)),
    )  # fmt: skip
    for sysctl, what, needed in needs:
        limit = inotify_limits.read_limit(sysctl, proc_sys)
        verdict = inotify_limits.judge(needed, limit)
        if verdict == "unknown":
            results.append(Result(SKIP, f"inotify {what}: cannot read {sysctl}"))
            continue
        text = f"inotify {what}: this config needs {needed}, {sysctl} is {limit}"
        if verdict == "ok":
            results.append(Result(OK, text))
            continue
        advice = inotify_limits.sysctl_advice(sysctl, needed, limit)
        if verdict == "over":
            text += "; the folders beyond it are polled instead of watched"
        else:
            text += "; other programs of this user use it too"
        results.append(Result(WARNING, f"{text}: {advice}"))
    return results


def check_hook(hook: Hook) -> Result:
    """The `on_complete` program exists and may be run (else every file ends with a warning).

    A bare name is looked up on PATH as the daemon's environment has it, like the daemon does."""
    program = hook.command[0]
    found = shutil.which(program)
    if found is not None:
        return Result(OK, f"on_complete program {found} is there and executable")
    path = Path(program)
    if "/" not in program:
        return Result(PROBLEM, f"on_complete program {program!r} is not on PATH: give its full "
                      "path in 'on_complete.command', or remove on_complete")  # fmt: skip
    if not path.exists():
        return Result(PROBLEM, f"on_complete program {program} does not exist: fix "
                      "'on_complete.command', or remove on_complete")  # fmt: skip
    return Result(PROBLEM, f"on_complete program {program} is not an executable file: "
                  f"chmod +x it, or fix 'on_complete.command'")  # fmt: skip


def check_state_file(path: Path) -> Result:
    """The state file (or the folder it will be created in) can be written; nothing changes."""
    if path.exists():
        if not path.is_file():
            return Result(PROBLEM, f"state file {path} is not a file: fix state_file")
        try:
            with path.open("r+b"):
                pass
        except OSError as error:
            return Result(PROBLEM, f"state file {path} cannot be written ({error.strerror}): "
                          "fix its owner or permissions")  # fmt: skip
        reason = try_write(path.parent)  # SQLite writes its -wal and -shm files beside it
        if reason is not None:
            return Result(PROBLEM, f"state file folder {path.parent} is not writable ({reason}): "
                          "SQLite keeps its journal there; fix its permissions")  # fmt: skip
        return Result(OK, f"state file {path} is writable")
    start = nearest_existing(path.parent)
    reason = try_write(start) if start.is_dir() else "not a folder"
    if reason is not None:
        return Result(PROBLEM, f"state file {path} cannot be created ({start}: {reason}): fix "
                      "state_file, or create its folder for the service's user (systemd "
                      "StateDirectory=)")  # fmt: skip
    return Result(OK, f"state file {path} does not exist yet and can be created")


# ---------------------------------------------------------------------------------------------
# The bucket


def check_storage(settings: Storage, *, timeout_seconds: float) -> Iterator[Result]:
    """List, put a tiny object, fetch it by its link like SpeechKit, delete it."""
    where = f"bucket {settings.bucket} at {settings.endpoint_url}"
    objects = storage.ObjectStore(settings)
    try:
        objects.list_keys()
    except storage.StorageError as error:
        yield Result(PROBLEM, storage_problem(error, settings))
        yield Result(SKIP, "storage: test object write, link and delete (need a reachable bucket)")
        return
    yield Result(OK, f"storage: {where} is reachable with our keys")
    key = f"{settings.prefix}{PROBE_KEY_NAME}{secrets.token_hex(8)}.txt"
    with tempfile.TemporaryDirectory(prefix="speechkit-watch-check-") as folder:
        probe = Path(folder) / "probe.txt"
        probe.write_bytes(PROBE_BYTES)
        try:
            objects.upload(probe, key, len(PROBE_BYTES), PROBE_SHA256)
        except storage.StorageError as error:
            yield Result(PROBLEM, refused_problem(error, settings, f"writing the test object "
                         f"{key}", "the daemon uploads every file there"))  # fmt: skip
            with contextlib.suppress(storage.StorageError):  # a timed-out write may have landed
                objects.delete(key)
            yield Result(SKIP, "storage: test object link and delete (it was not written)")
            return
    yield Result(OK, f"storage: wrote the test object {key}")
    try:
        link = check_link(objects, settings, key, timeout_seconds=timeout_seconds)
    finally:
        deleted = delete_probe(objects, settings, key)
    yield link
    yield deleted


def delete_probe(objects: storage.ObjectStore, settings: Storage, key: str) -> Result:
    """Delete the test object; if that fails, the PROBLEM names it so a person removes it."""
    try:
        objects.delete(key)
    except storage.StorageError as error:
        problem = refused_problem(error, settings, "deleting the test object", "the daemon "
                                  "deletes each object after its result and sweeps orphans "
                                  "hourly; storage.uploader cannot delete")  # fmt: skip
        return Result(PROBLEM, f"{problem}; the test object {key} is left in bucket "
                      f"{settings.bucket}: delete it by hand")  # fmt: skip
    return Result(OK, "storage: deleted the test object")


def check_link(
    objects: storage.ObjectStore, settings: Storage, key: str, *, timeout_seconds: float
) -> Result:
    """Fetch the object by the link the daemon would send in `audio.uri`."""
    if settings.link == "plain":
        return Result(SKIP, "storage: link is plain, so SpeechKit reads objects with the rights "
                      "of the service account that owns the speechkit credentials (it needs "
                      "storage.viewer on the bucket); that cannot be checked "
                      "from here")  # fmt: skip
    try:
        url = objects.audio_uri(key)
    except storage.StorageError as error:
        return Result(PROBLEM, storage_problem(error, settings))
    shown = storage.without_query(url)  # the signature lives in the query string
    try:
        response = requests.get(url, timeout=timeout_seconds, allow_redirects=False)
    except requests.RequestException as error:
        why = transport.tunnel_refusal(error) or type(error).__name__
        return Result(PROBLEM, f"storage: the presigned link {shown} cannot be fetched "
                      f"({why}): check storage.endpoint_url")  # fmt: skip
    if response.status_code == 403:
        return Result(PROBLEM, f"storage: the presigned link {shown} was refused (HTTP 403): "
                      "check storage.region, and give the service account of "
                      f"storage.access_key_id the role {STORAGE_ROLE} on bucket "
                      f"{settings.bucket} (a presigned link reads with its signer's "
                      "rights)")  # fmt: skip
    if response.status_code != 200 or response.content != PROBE_BYTES:
        return Result(PROBLEM, f"storage: the presigned link {shown} answered HTTP "
                      f"{response.status_code}: check storage.endpoint_url and storage.region, "
                      "or use link: plain")  # fmt: skip
    return Result(OK, "storage: a presigned link to the test object can be fetched")


# ---------------------------------------------------------------------------------------------
# Credentials


def check_credentials(
    settings: SpeechKit,
    specification: dict[str, Any],
    provider: credentials_module.Credentials | None = None,
) -> Iterator[Result]:
    """For a key file or the metadata service, get a token; then probe both API URLs."""
    key = credentials_module.config_key(settings)
    provider = provider if provider is not None else credentials_module.from_settings(settings)
    client = backends.client_for(settings)(settings, credentials=provider)
    submit_key, submit_url = (
        ("speechkit.stt_v3_url", settings.stt_v3_url)
        if settings.api == "v3"
        else ("speechkit.recognize_url", settings.recognize_url)
    )
    try:
        if isinstance(provider, credentials_module.RefreshingCredentials):
            try:
                provider.authorization_header()
            except credentials_module.CredentialsError as error:
                yield Result(PROBLEM, f"credentials: no IAM token ({error}): check {key}")
                yield Result(SKIP, "credentials: the recognition API (no token to try)")
                return
            yield Result(OK, token_message(settings))
        operation_id = "e03" + "".join(
            secrets.choice(OPERATION_ID_ALPHABET) for _ in range(OPERATION_ID_LENGTH - 3)
        )
        operations = probe_result(
            lambda: client.get_operation(operation_id),
            key, "speechkit.operations_url", settings.operations_url,
        )  # fmt: skip
        yield operations
        if operations.status == PROBLEM and operations.message.startswith("credentials:"):
            yield Result(SKIP, f"{submit_key}: not probed (the credentials are refused)")
            return
        yield probe_result(
            lambda: client.submit_without_audio(specification), key, submit_key, submit_url
        )
    finally:
        client.close()


def probe_result(probe: Callable[[], object], key: str, url_key: str, url: str) -> Result:
    """Run one probe that must be refused by the API; an answer of success is a PROBLEM too."""
    try:
        probe()
    except recognition.ApiError as error:
        return api_problem(error, key, url_key, url)
    return Result(PROBLEM, f"{url_key}: {url} accepted a request that the SpeechKit API refuses: "
                  f"check {url_key}")  # fmt: skip


def token_message(settings: SpeechKit) -> str:
    account = settings.service_account_key
    if account is not None:
        return (
            f"credentials: the IAM token exchange at {settings.iam_url} works for service "
            f"account {account.service_account_id} (key {account.key_id})"
        )
    return f"credentials: the metadata service at {settings.metadata_url} gave an IAM token"


# ---------------------------------------------------------------------------------------------


def check_metrics(listen: str) -> Result:
    """Whether the daemon could open its metrics endpoint at `listen`: bind it and let go; a
    port held by a running speechkit-watch (its metrics answer there) is fine."""
    host, port = metrics.parse_listen(listen)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as error:
        if _serves_our_metrics(host, port):
            return Result(OK, f"metrics: {listen} is served by a running speechkit-watch")
        return Result(
            PROBLEM,
            f"metrics: cannot listen on {listen} ({error.strerror or error}): another program "
            "holds the port, or the address is not this machine's: check metrics.listen",
        )
    return Result(OK, f"metrics: the endpoint can listen on {listen}")


def _serves_our_metrics(host: str, port: int) -> bool:
    shown = f"[{host}]" if ":" in host else host
    try:
        answer = requests.get(f"http://{shown}:{port}/metrics", timeout=2)
    except requests.RequestException:
        return False
    return answer.ok and "speechkit_watch_" in answer.text


def run_checks(config: Config) -> Iterator[Result]:
    """Every probe, in the order an operator fixes things; rows come as probes finish."""
    yield Result(OK, f"config {config.source} is valid")
    yield from check_folders(config)
    yield from check_inotify(config)
    yield check_state_file(config.state_file)
    if config.on_complete is not None:
        yield check_hook(config.on_complete)
    if config.metrics is not None:
        yield check_metrics(config.metrics.listen)
    if config.storage is None:
        yield Result(OK, "storage: none configured; API v3 takes the audio inline, files up to "
                     f"{v3.INLINE_LIMIT} (after conversion)")  # fmt: skip
    else:
        yield from check_storage(
            config.storage, timeout_seconds=config.speechkit.request_timeout_seconds
        )
    yield from check_credentials(
        config.speechkit, config.recognition.settings(config.speechkit.api, 1)
    )
