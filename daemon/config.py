"""The configuration: one schema of every key, YAML loading, `${ENV}` interpolation, validation.

`SCHEMA` is the single source of truth: every key with its type, default and meaning.
`config.example.yaml` documents the same keys and a test fails when the two drift apart.
Validation collects every problem at once; each names the file and the key path.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from daemon.credentials import ServiceAccountKey

DEFAULT_CONFIG_PATH = Path("/etc/speechkit-watch/config.yaml")
CONFIG_PATH_ENV = "SPEECHKIT_WATCH_CONFIG"

# Defaults, each with the reason it is what it is.
DEFAULT_PATTERNS = ("*.ogg", "*.opus")  # the two usual names of Ogg Opus files
DEFAULT_LANGUAGE = "ru-RU"  # the service's own default
DEFAULT_MODEL = "general"  # the service's own default
DEFAULT_ENDPOINT_URL = "https://storage.yandexcloud.net"  # Yandex Object Storage
DEFAULT_REGION = "ru-central1"  # the only Yandex Object Storage region
DEFAULT_PREFIX = "speechkit-watch/"  # keeps our objects apart from anything else in the bucket
DEFAULT_RECOGNIZE_URL = "https://transcribe.api.cloud.yandex.net/speech/stt/v2/longRunningRecognize"
DEFAULT_OPERATIONS_URL = "https://operation.api.cloud.yandex.net/operations"
DEFAULT_IAM_URL = "https://iam.api.cloud.yandex.net/iam/v1/tokens"  # Yandex IAM token exchange
# The VM metadata service (Google-compatible path) hands out the attached service account's token.
DEFAULT_METADATA_URL = (
    "http://169.254.169.254/computeMetadata/v1/instance/service-accounts/default/token"
)
DEFAULT_STATE_FILE = "/var/lib/speechkit-watch/state.db"  # systemd StateDirectory=speechkit-watch
DEFAULT_SETTLE_SECONDS = 2.0  # long enough for cp/rsync pauses, short enough to feel prompt
DEFAULT_RESCAN_SECONDS = 60.0  # safety net for dropped inotify events; a scan is a cheap listdir
DEFAULT_CONCURRENCY = 4  # parallel uploads/submits; storage and the API, not the CPU, are the limit
DEFAULT_PRESIGN_SECONDS = 86400  # the service may fetch late (deferred-general); 30 days is the cap
MAX_PRESIGN_SECONDS = 30 * 86400  # SigV4 presigned URLs last at most 7 days on AWS, 30 on Yandex
DEFAULT_REQUEST_TIMEOUT = (
    30.0  # every network call has a timeout; the API answers in well under 1 s
)
DEFAULT_POLL_MAX_INTERVAL = (
    300.0  # status checks back off to once per 5 min: long files, few checks
)
DEFAULT_POLL_SECONDS_PER_MINUTE = (
    10.0  # documented processing speed: ~10 s per audio minute per channel
)
DEFAULT_SUBMISSIONS_PER_HOUR = 500  # the service's quota per cloud folder
DEFAULT_STATUS_CHECKS_PER_HOUR = 2500  # the service's v2 quota per cloud folder
DEFAULT_AUTH_RETRY_SECONDS = 60.0  # refused credentials: a slow, steady probe until fixed
DEFAULT_OUTPUTS = ("txt", "json")  # SPEC: a .txt and the raw .json beside the audio
DEFAULT_LOG_LEVEL = "info"

OUTPUT_FORMATS = ("txt", "json", "srt", "vtt")
LOG_LEVELS = ("debug", "info", "warning", "error")
LINK_KINDS = ("presigned", "plain")
# The ways to authenticate to the recognition API; a config sets exactly one.
CREDENTIAL_KEYS = ("api_key", "iam_token", "service_account_key_file", "metadata_service")
AFTER_DONE_ACTIONS = ("keep", "move", "delete")
DEFAULT_HOOK_TIMEOUT = 60.0  # a notification hook that takes a minute is stuck
# The documented v2 language codes, in their canonical spelling; the service reads them in any
# case (`ru-ru` is valid), so the config does too and sends this spelling.
LANGUAGES = (
    "ru-RU", "en-US", "de-DE", "es-ES", "fi-FI", "fr-FR", "he-HE", "it-IT", "kk-KZ", "nl-NL",
    "pl-PL", "pt-PT", "pt-BR", "sv-SE", "tr-TR", "uz-UZ", "auto",
)  # fmt: skip
# The documented v2 models; deferred-general is the cheap one that finishes within 24 h.
MODELS = ("general", "general:rc", "general:deprecated", "deferred-general")
# Languages that only some models serve (the docs: pt-BR only with general:rc).
LANGUAGE_MODELS = {"pt-BR": ("general:rc",)}
AUTO_LANGUAGE = "auto"  # the service detects the language; its text then gets no normalization

REQUIRED: Any = object()  # marker: the key has no default
UNREAD_SECRET = "(not read)"  # noqa: S105 - not a password: stands for a secret when a command loads the config without them


class ConfigError(Exception):
    """Configuration problems; each line names the file, the key path and the problem."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = list(problems)


class Secret:
    """A secret string that never shows itself in repr, str, logs or tracebacks."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class Key:
    """One configuration key: its type, default and one-line meaning."""

    name: str
    kind: str  # str, bool, int, float, path, enum, list, section, sections
    doc: str
    default: Any = REQUIRED
    choices: tuple[str, ...] = ()
    children: tuple[Key, ...] = ()
    secret: bool = False  # also accepted as NAME_file; never logged
    minimum: float | None = None
    nullable: bool = False
    item_choices: tuple[str, ...] = ()


def _recognition_keys(*, with_defaults: bool) -> tuple[Key, ...]:
    def default(value: Any) -> Any:
        return value if with_defaults else None

    return (
        Key("language", "language", "languageCode, any case (pt-BR needs model general:rc; "
            "auto: detected, never normalized)", default(DEFAULT_LANGUAGE), choices=LANGUAGES,
            nullable=not with_defaults),
        Key("model", "enum", "model: general, general:rc, general:deprecated, deferred-general "
            "(cheap, within 24 h)", default(DEFAULT_MODEL), choices=MODELS,
            nullable=not with_defaults),
        Key("profanity_filter", "bool", "profanityFilter", default(False),
            nullable=not with_defaults),
        Key("literature_text", "bool", "literature_text: punctuation and capitals",
            default(False), nullable=not with_defaults),
        Key("raw_results", "bool", "rawResults: numbers as words", default(False),
            nullable=not with_defaults),
    )  # fmt: skip


SCHEMA: tuple[Key, ...] = (
    Key("watch", "sections", "folders to watch (one or more)", children=(
        Key("path", "path", "the folder to watch"),
        Key("recursive", "bool", "also watch subfolders", False),
        Key("patterns", "list", "file name patterns, matched case-insensitively",
            list(DEFAULT_PATTERNS)),
        Key("output_dir", "path", "where outputs go; null: beside the audio", None, nullable=True),
        Key("polling", "bool", "poll instead of inotify (network mounts send no events)", False),
        Key("after_done", "enum", "what happens to the audio once transcribed", "keep",
            choices=AFTER_DONE_ACTIONS),
        Key("move_to", "path", "folder for after_done: move (subfolders kept)", None,
            nullable=True),
        Key("recognition", "section", "per-folder overrides of `recognition`", {},
            children=_recognition_keys(with_defaults=False)),
    )),
    Key("recognition", "section", "maps to config.specification of each request", {},
        children=_recognition_keys(with_defaults=True)),
    Key("storage", "section", "the S3-compatible bucket the audio is uploaded to", children=(
        Key("endpoint_url", "url", "S3 endpoint", DEFAULT_ENDPOINT_URL),
        Key("region", "str", "S3 region", DEFAULT_REGION),
        Key("bucket", "str", "bucket name"),
        Key("prefix", "str", "object key prefix", DEFAULT_PREFIX),
        Key("access_key_id", "str", "static access key id", secret=True),
        Key("secret_access_key", "str", "static secret access key", secret=True),
        Key("link", "enum", "audio.uri form: presigned URL or plain object URL", "presigned",
            choices=LINK_KINDS),
        Key("presign_seconds", "int", "lifetime of presigned links", DEFAULT_PRESIGN_SECONDS,
            minimum=60),
        Key("delete_after", "bool", "delete the object once the result is saved", True),
    )),
    Key("speechkit", "section", "the recognition API", children=(
        Key("api_key", "str", "service account API key (Authorization: Api-Key)", None,
            secret=True, nullable=True),
        Key("iam_token", "str", "a static IAM token (expires within 12 h: for trials only)", None,
            secret=True, nullable=True),
        Key("service_account_key_file", "path",
            "authorized key JSON of a service account (`yc iam key create`); tokens are renewed",
            None, nullable=True),
        Key("metadata_service", "bool",
            "take tokens from the VM metadata service (the VM's service account)", False),
        Key("iam_url", "url", "IAM token exchange endpoint (service_account_key_file)",
            DEFAULT_IAM_URL),
        Key("metadata_url", "url", "metadata service token endpoint (metadata_service)",
            DEFAULT_METADATA_URL),
        Key("recognize_url", "url", "longRunningRecognize endpoint", DEFAULT_RECOGNIZE_URL),
        Key("operations_url", "url", "operations endpoint", DEFAULT_OPERATIONS_URL),
        Key("request_timeout_seconds", "float", "timeout of every API request",
            DEFAULT_REQUEST_TIMEOUT, minimum=1),
    )),
    Key("polling", "section", "status checks of pending operations", {}, children=(
        Key("seconds_per_minute", "float",
            "expected processing time per audio minute per channel (first check)",
            DEFAULT_POLL_SECONDS_PER_MINUTE, minimum=0),
        Key("max_interval_seconds", "float", "cap of the backoff between later checks",
            DEFAULT_POLL_MAX_INTERVAL, minimum=1),
    )),
    Key("quota", "section", "calls per hour the daemon allows itself (sliding window)", {},
        children=(
        Key("submissions_per_hour", "int", "longRunningRecognize calls per hour",
            DEFAULT_SUBMISSIONS_PER_HOUR, minimum=1),
        Key("status_checks_per_hour", "int", "operation status checks per hour",
            DEFAULT_STATUS_CHECKS_PER_HOUR, minimum=1),
    )),
    Key("auth_retry_seconds", "float",
        "while credentials are refused, work that needs them is retried this often",
        DEFAULT_AUTH_RETRY_SECONDS, minimum=1),
    Key("state_file", "path", "SQLite state file", DEFAULT_STATE_FILE),
    Key("settle_seconds", "float", "quiet time before a file counts as completely written",
        DEFAULT_SETTLE_SECONDS, minimum=0),
    Key("rescan_seconds", "float", "period of the safety-net rescan of every folder",
        DEFAULT_RESCAN_SECONDS, minimum=1),
    Key("concurrency", "int", "files uploaded/submitted/checked in parallel",
        DEFAULT_CONCURRENCY, minimum=1),
    Key("on_complete", "section", "a program run after each file ends (done or failed)", None,
        nullable=True, children=(
        Key("command", "list", "argv of the program, no shell"),
        Key("timeout_seconds", "float", "the program is killed after this long",
            DEFAULT_HOOK_TIMEOUT, minimum=1),
    )),
    Key("outputs", "list", "outputs written beside the audio", list(DEFAULT_OUTPUTS),
        item_choices=OUTPUT_FORMATS),
    Key("log_level", "enum", "debug, info, warning or error", DEFAULT_LOG_LEVEL,
        choices=LOG_LEVELS),
)  # fmt: skip


# ---------------------------------------------------------------------------------------------
# The typed result


@dataclass(frozen=True)
class Recognition:
    language: str = DEFAULT_LANGUAGE
    model: str = DEFAULT_MODEL
    profanity_filter: bool = False
    literature_text: bool = False
    raw_results: bool = False

    def specification(self) -> dict[str, Any]:
        """The request's `config.specification`; never `audioChannelCount` (Opus carries it)."""
        return {
            "languageCode": self.language,
            "model": self.model,
            "profanityFilter": self.profanity_filter,
            "literature_text": self.literature_text,
            "audioEncoding": "OGG_OPUS",
            "rawResults": self.raw_results,
        }


@dataclass(frozen=True)
class WatchFolder:
    path: Path
    recursive: bool = False
    patterns: tuple[str, ...] = DEFAULT_PATTERNS
    output_dir: Path | None = None
    polling: bool = False
    recognition: Recognition = field(default_factory=Recognition)
    after_done: str = "keep"
    move_to: Path | None = None


@dataclass(frozen=True)
class Storage:
    bucket: str
    access_key_id: Secret
    secret_access_key: Secret
    endpoint_url: str = DEFAULT_ENDPOINT_URL
    region: str = DEFAULT_REGION
    prefix: str = DEFAULT_PREFIX
    link: str = "presigned"
    presign_seconds: int = DEFAULT_PRESIGN_SECONDS
    delete_after: bool = True


@dataclass(frozen=True)
class SpeechKit:
    """One credential is set: api_key, iam_token, service_account_key or metadata_service."""

    api_key: Secret | None = None
    iam_token: Secret | None = None
    service_account_key_file: Path | None = None
    service_account_key: ServiceAccountKey | None = None  # the parsed content of that file
    metadata_service: bool = False
    iam_url: str = DEFAULT_IAM_URL
    metadata_url: str = DEFAULT_METADATA_URL
    recognize_url: str = DEFAULT_RECOGNIZE_URL
    operations_url: str = DEFAULT_OPERATIONS_URL
    request_timeout_seconds: float = DEFAULT_REQUEST_TIMEOUT


@dataclass(frozen=True)
class Polling:
    seconds_per_minute: float = DEFAULT_POLL_SECONDS_PER_MINUTE
    max_interval_seconds: float = DEFAULT_POLL_MAX_INTERVAL


@dataclass(frozen=True)
class Hook:
    command: tuple[str, ...]
    timeout_seconds: float = DEFAULT_HOOK_TIMEOUT


@dataclass(frozen=True)
class Quota:
    submissions_per_hour: int = DEFAULT_SUBMISSIONS_PER_HOUR
    status_checks_per_hour: int = DEFAULT_STATUS_CHECKS_PER_HOUR


@dataclass(frozen=True)
class Config:
    source: Path
    watch: tuple[WatchFolder, ...]
    storage: Storage
    speechkit: SpeechKit
    recognition: Recognition = field(default_factory=Recognition)
    polling: Polling = field(default_factory=Polling)
    quota: Quota = field(default_factory=Quota)
    on_complete: Hook | None = None
    auth_retry_seconds: float = DEFAULT_AUTH_RETRY_SECONDS
    state_file: Path = Path(DEFAULT_STATE_FILE)
    settle_seconds: float = DEFAULT_SETTLE_SECONDS
    rescan_seconds: float = DEFAULT_RESCAN_SECONDS
    concurrency: int = DEFAULT_CONCURRENCY
    outputs: tuple[str, ...] = DEFAULT_OUTPUTS
    log_level: str = DEFAULT_LOG_LEVEL
    # Not errors: worth a line at start (`run` logs them, `check` prints them).
    warnings: tuple[str, ...] = ()

    def secrets(self) -> list[str]:
        """Every secret value in this config (for redaction and the tests that look for leaks)."""
        speechkit = self.speechkit
        values = [
            self.storage.access_key_id.reveal(),
            self.storage.secret_access_key.reveal(),
            speechkit.api_key.reveal() if speechkit.api_key else "",
            speechkit.iam_token.reveal() if speechkit.iam_token else "",
        ]
        if speechkit.service_account_key is not None:
            values.extend(speechkit.service_account_key.secret_texts())
        return [value for value in values if value]


# ---------------------------------------------------------------------------------------------
# Loading and validation


def resolve_path(cli_value: str | None, environ: Mapping[str, str] | None = None) -> Path:
    """`-c`, else `$SPEECHKIT_WATCH_CONFIG`, else the system default."""
    environ = os.environ if environ is None else environ
    if cli_value:
        return Path(cli_value)
    if environ.get(CONFIG_PATH_ENV):
        return Path(environ[CONFIG_PATH_ENV])
    return DEFAULT_CONFIG_PATH


def load(
    path: Path, environ: Mapping[str, str] | None = None, *, with_secrets: bool = True
) -> Config:
    """Read, interpolate and validate the config file; raise ConfigError listing every problem.

    `with_secrets=False` is for commands that never talk to the cloud (`status`, `retry`,
    `render`): secrets are neither read nor required to be available, so an operator can run
    them without the service's credentials.
    """
    environ = os.environ if environ is None else environ
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError([f"{path}: cannot read the config file: {error.strerror}"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{path}: the config file is not UTF-8 text"]) from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        where = ""
        mark = getattr(error, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(error, "problem", None) or "invalid YAML"
        raise ConfigError([f"{path}: not valid YAML{where}: {problem}"]) from None
    return parse(document, source=path, environ=environ, with_secrets=with_secrets)


def parse(
    document: Any, *, source: Path, environ: Mapping[str, str], with_secrets: bool = True
) -> Config:
    """Validate an already-parsed YAML document (pure apart from reading `*_file` secrets)."""
    validator = _Validator(source, environ, with_secrets=with_secrets)
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise ConfigError(
            [f"{source}: the config must be a mapping of keys, not a {_kind(document)}"]
        )
    values = validator.section(document, SCHEMA, "")
    if not validator.problems:
        validator.cross_checks(values)
    if validator.problems:
        raise ConfigError(validator.problems)
    return _build(values, source, tuple(validator.warnings))


class _Validator:
    def __init__(
        self, source: Path, environ: Mapping[str, str], *, with_secrets: bool = True
    ) -> None:
        self.source = source
        self.environ = environ
        self.with_secrets = with_secrets
        self.problems: list[str] = []
        self.warnings: list[str] = []

    def problem(self, key_path: str, message: str) -> None:
        self.problems.append(f"{self.source}: at '{key_path}': {message}")

    def section(
        self, mapping: Mapping[str, Any], keys: Sequence[Key], prefix: str
    ) -> dict[str, Any]:
        known = {key.name: key for key in keys}
        secret_files = {f"{key.name}_file": key for key in keys if key.secret}
        result: dict[str, Any] = {}
        for name in mapping:
            if name not in known and name not in secret_files:
                self.problem(_join(prefix, str(name)), f"unknown key{_suggest(str(name), known)}")
        for key in keys:
            key_path = _join(prefix, key.name)
            present = key.name in mapping
            if key.secret:
                file_key = f"{key.name}_file"
                if present and file_key in mapping:
                    self.problem(key_path, f"set either '{key.name}' or '{file_key}', not both")
                    continue
                if not self.with_secrets and (
                    file_key in mapping or (present and mapping[key.name] is not None)
                ):
                    result[key.name] = UNREAD_SECRET
                    continue
                if file_key in mapping:
                    result[key.name] = self.secret_file(mapping[file_key], _join(prefix, file_key))
                    continue
            if not present:
                if key.default is REQUIRED:
                    hint = f" (or '{key.name}_file')" if key.secret else ""
                    self.problem(key_path, f"required{hint}")
                    continue
                value = key.default
                if key.kind == "section" and value is not None:
                    value = self.section(value, key.children, key_path)
                result[key.name] = value
                continue
            result[key.name] = self.value(mapping[key.name], key, key_path)
        return result

    def secret_file(self, raw: Any, key_path: str) -> Any:
        file_name = self.string(raw, key_path)
        if file_name is None:
            return None
        try:
            text = Path(file_name).read_text(encoding="utf-8").strip()
        except OSError as error:
            self.problem(key_path, f"cannot read {file_name}: {error.strerror}")
        except UnicodeDecodeError:
            self.problem(key_path, f"{file_name} is not UTF-8 text")
        else:
            self.warn_if_readable_by_others(Path(file_name), key_path)
            return text
        return None

    def warn_if_readable_by_others(self, path: Path, key_path: str) -> None:
        """A secret in a file every local user can read is not much of a secret."""
        try:
            mode = path.stat().st_mode
        except OSError:
            return
        if mode & stat.S_IROTH:
            self.warnings.append(
                f"{self.source}: at '{key_path}': {path} holds a secret and every user of this "
                f"machine can read it (mode {stat.S_IMODE(mode):04o}): run chmod o-r on it, or "
                "hand it over with systemd LoadCredential="
            )

    def string(self, raw: Any, key_path: str) -> str | None:
        if not isinstance(raw, str):
            self.problem(key_path, f"expected a string, got {_kind(raw)}")
            return None
        return self.interpolate(raw, key_path)

    def interpolate(self, text: str, key_path: str) -> str | None:
        missing: list[str] = []

        def substitute(match: re.Match[str]) -> str:
            if match.group(0) == "$$":
                return "$"
            name = match.group(1)
            if name not in self.environ:
                missing.append(name)
                return ""
            return self.environ[name]

        result = _ENV_REFERENCE.sub(substitute, text)
        for name in missing:
            self.problem(key_path, f"environment variable {name} is not set")
        return None if missing else result

    def value(self, raw: Any, key: Key, key_path: str) -> Any:
        if raw is None:
            if key.nullable:
                return None
            self.problem(key_path, "must not be empty")
            return None
        handler = _KIND_HANDLERS[key.kind]
        return handler(self, raw, key, key_path)

    def credential_checks(self, speechkit: dict[str, Any]) -> None:
        """Exactly one way to authenticate; a key file is read and parsed here (fail fast)."""
        for name in ("api_key", "iam_token"):
            if speechkit.get(name) == "":
                self.problem(
                    f"speechkit.{name}",
                    "must not be empty (leave the key out, or write null, to use another one)",
                )
                return
        chosen = [name for name in CREDENTIAL_KEYS if speechkit.get(name)]
        if len(chosen) != 1:
            found = f"found {' and '.join(chosen)}" if chosen else "none is set"
            self.problem(
                "speechkit",
                "set exactly one of api_key, iam_token, service_account_key_file, "
                f"metadata_service: true ({found})",
            )
            return
        if speechkit.get("iam_token"):
            self.warnings.append(
                f"{self.source}: at 'speechkit.iam_token': a static IAM token expires within "
                "12 hours, and then every request is refused; for a service that keeps running "
                "use service_account_key_file, metadata_service or api_key"
            )
        key_file = speechkit.get("service_account_key_file")
        if key_file is None or not self.with_secrets:
            return
        from daemon import credentials  # noqa: PLC0415 - loads cryptography only when needed

        key_path = "speechkit.service_account_key_file"
        try:
            text = Path(key_file).read_text(encoding="utf-8")
        except OSError as error:
            self.problem(key_path, f"cannot read {key_file}: {error.strerror}")
            return
        except UnicodeDecodeError:
            self.problem(key_path, f"{key_file} is not UTF-8 text")
            return
        try:
            speechkit["service_account_key"] = credentials.parse_key_file(text)
        except ValueError as error:
            self.problem(key_path, f"{key_file}: {error}")
            return
        self.warn_if_readable_by_others(Path(key_file), key_path)

    def recognition_checks(self, values: dict[str, Any]) -> None:
        """Pairs of settings the service refuses together, for the global and each folder's."""
        base = values["recognition"]
        places = [("recognition", base)] + [
            (f"watch[{index}].recognition", {**base, **_set_values(folder["recognition"])})
            for index, folder in enumerate(values["watch"])
            if _set_values(folder["recognition"])
        ]
        for prefix, settings in places:
            language, model = settings.get("language"), settings.get("model")
            if language is None or model is None:
                continue  # already reported
            allowed = LANGUAGE_MODELS.get(language)
            if allowed is not None and model not in allowed:
                self.problem(
                    f"{prefix}.language",
                    f"{language} is recognised only by model {' or '.join(allowed)}, and "
                    f"'{prefix}.model' is {model}: set model: {allowed[0]}, or another language",
                )
            if language == AUTO_LANGUAGE and settings.get("literature_text"):
                self.warnings.append(
                    f"{self.source}: at '{prefix}.literature_text': with language auto the "
                    "service does not normalize the text, so literature_text has no effect"
                )

    def cross_checks(self, values: dict[str, Any]) -> None:
        self.credential_checks(values["speechkit"])
        self.recognition_checks(values)
        if not values["watch"]:
            self.problem("watch", "list at least one folder to watch")
        hook = values["on_complete"]
        if hook is not None and not hook["command"]:
            self.problem("on_complete.command", "give the program to run")
        seen: dict[str, int] = {}
        for index, folder in enumerate(values["watch"]):
            if folder["after_done"] == "move" and not folder["move_to"]:
                self.problem(f"watch[{index}].move_to", "required when after_done is move")
            resolved = str(Path(folder["path"]).resolve())
            if resolved in seen:
                self.problem(f"watch[{index}].path", f"the same folder as watch[{seen[resolved]}]")
            seen[resolved] = index


def _check_str(validator: _Validator, raw: Any, key: Key, key_path: str) -> Any:
    text = validator.string(raw, key_path)
    if text is not None and not text and not key.nullable:
        validator.problem(key_path, "must not be empty")
        return None
    return text


def _check_url(validator: _Validator, raw: Any, key: Key, key_path: str) -> Any:
    text = validator.string(raw, key_path)
    if text is not None and not re.match(r"^https?://[^/\s]+", text):
        validator.problem(key_path, f"expected an http:// or https:// URL, got {text!r}")
        return None
    return text


def _check_path(validator: _Validator, raw: Any, key: Key, key_path: str) -> Any:
    text = _check_str(validator, raw, key, key_path)
    if text is None:
        return None
    return Path(text).expanduser()


def _check_enum(validator: _Validator, raw: Any, key: Key, key_path: str) -> Any:
    text = validator.string(raw, key_path)
    if text is not None and text not in key.choices:
        validator.problem(key_path, f"expected one of {', '.join(key.choices)}; got {text!r}")
        return None
    return text


def _check_language(validator: _Validator, raw: Any, key: Key, key_path: str) -> Any:
    """A language code in any case, as the service reads it; the canonical spelling is kept."""
    text = validator.string(raw, key_path)
    if text is None:
        return None
    canonical = {choice.lower(): choice for choice in key.choices}.get(text.lower())
    if canonical is None:
        validator.problem(key_path, f"expected one of {', '.join(key.choices)}; got {text!r}")
    return canonical


def _check_bool(validator: _Validator, raw: Any, key: Key, key_path: str) -> Any:
    if isinstance(raw, bool):
        return raw
    validator.problem(key_path, f"expected true or false, got {_kind(raw)}")
    return None


def _check_number(validator: _Validator, raw: Any, key: Key, key_path: str) -> Any:
    integer = key.kind == "int"
    if (
        isinstance(raw, bool)
        or not isinstance(raw, int | float)
        or (integer and isinstance(raw, float))
    ):
        validator.problem(
            key_path, f"expected {'an integer' if integer else 'a number'}, got {_kind(raw)}"
        )
        return None
    if key.minimum is not None and raw < key.minimum:
        validator.problem(key_path, f"must be at least {key.minimum:g}, got {raw}")
        return None
    return int(raw) if integer else float(raw)


def _check_list(validator: _Validator, raw: Any, key: Key, key_path: str) -> Any:
    if not isinstance(raw, list):
        validator.problem(key_path, f"expected a list, got {_kind(raw)}")
        return None
    items: list[str] = []
    for index, item in enumerate(raw):
        text = validator.string(item, f"{key_path}[{index}]")
        if text is None:
            continue
        if key.item_choices and text not in key.item_choices:
            choices = ", ".join(key.item_choices)
            validator.problem(f"{key_path}[{index}]", f"expected one of {choices}; got {text!r}")
            continue
        items.append(text)
    return items


def _check_section(validator: _Validator, raw: Any, key: Key, key_path: str) -> Any:
    if not isinstance(raw, dict):
        validator.problem(key_path, f"expected a mapping of keys, got {_kind(raw)}")
        return None
    return validator.section(raw, key.children, key_path)


def _check_sections(validator: _Validator, raw: Any, key: Key, key_path: str) -> Any:
    if not isinstance(raw, list):
        validator.problem(key_path, f"expected a list of folders, got {_kind(raw)}")
        return []
    sections = []
    for index, item in enumerate(raw):
        item_path = f"{key_path}[{index}]"
        if not isinstance(item, dict):
            validator.problem(item_path, f"expected a mapping with 'path', got {_kind(item)}")
            continue
        sections.append(validator.section(item, key.children, item_path))
    return sections


_KIND_HANDLERS: dict[str, Callable[[_Validator, Any, Key, str], Any]] = {
    "str": _check_str,
    "url": _check_url,
    "path": _check_path,
    "enum": _check_enum,
    "language": _check_language,
    "bool": _check_bool,
    "int": _check_number,
    "float": _check_number,
    "list": _check_list,
    "section": _check_section,
    "sections": _check_sections,
}

_ENV_REFERENCE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _kind(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
             list: "a list", dict: "a mapping"}  # fmt: skip
    return names.get(type(value), type(value).__name__)


def _suggest(name: str, known: Mapping[str, Key]) -> str:
    import difflib  # noqa: PLC0415 - only needed on the error path

    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _set_values(values: Mapping[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in values.items() if value is not None}


def _recognition(values: Mapping[str, Any], base: Recognition | None = None) -> Recognition:
    base = base or Recognition()
    return Recognition(**{**base.__dict__, **_set_values(values)})


def _build(values: dict[str, Any], source: Path, warnings: tuple[str, ...] = ()) -> Config:
    recognition = _recognition(values["recognition"])
    folders = tuple(
        WatchFolder(
            path=Path(folder["path"]).absolute(),
            recursive=folder["recursive"],
            patterns=tuple(folder["patterns"]),
            output_dir=Path(folder["output_dir"]).absolute() if folder["output_dir"] else None,
            polling=folder["polling"],
            recognition=_recognition(folder["recognition"], recognition),
            after_done=folder["after_done"],
            move_to=Path(folder["move_to"]).absolute() if folder["move_to"] else None,
        )
        for folder in values["watch"]
    )
    storage = values["storage"]
    speechkit = values["speechkit"]
    polling = values["polling"]
    return Config(
        source=source,
        watch=folders,
        recognition=recognition,
        storage=Storage(
            bucket=storage["bucket"],
            access_key_id=Secret(storage["access_key_id"]),
            secret_access_key=Secret(storage["secret_access_key"]),
            endpoint_url=storage["endpoint_url"],
            region=storage["region"],
            prefix=storage["prefix"],
            link=storage["link"],
            presign_seconds=min(storage["presign_seconds"], MAX_PRESIGN_SECONDS),
            delete_after=storage["delete_after"],
        ),
        speechkit=SpeechKit(
            api_key=Secret(speechkit["api_key"]) if speechkit["api_key"] else None,
            iam_token=Secret(speechkit["iam_token"]) if speechkit["iam_token"] else None,
            service_account_key_file=speechkit["service_account_key_file"],
            service_account_key=speechkit.get("service_account_key"),
            metadata_service=speechkit["metadata_service"],
            iam_url=speechkit["iam_url"],
            metadata_url=speechkit["metadata_url"],
            recognize_url=speechkit["recognize_url"],
            operations_url=speechkit["operations_url"].rstrip("/"),
            request_timeout_seconds=speechkit["request_timeout_seconds"],
        ),
        polling=Polling(
            seconds_per_minute=polling["seconds_per_minute"],
            max_interval_seconds=polling["max_interval_seconds"],
        ),
        quota=Quota(
            submissions_per_hour=values["quota"]["submissions_per_hour"],
            status_checks_per_hour=values["quota"]["status_checks_per_hour"],
        ),
        auth_retry_seconds=values["auth_retry_seconds"],
        on_complete=None
        if values["on_complete"] is None
        else Hook(
            command=tuple(values["on_complete"]["command"]),
            timeout_seconds=values["on_complete"]["timeout_seconds"],
        ),
        state_file=Path(values["state_file"]).absolute(),
        settle_seconds=values["settle_seconds"],
        rescan_seconds=values["rescan_seconds"],
        concurrency=values["concurrency"],
        outputs=tuple(dict.fromkeys(values["outputs"])),
        log_level=values["log_level"],
        warnings=warnings,
    )


def schema_key_paths(keys: Sequence[Key] = SCHEMA, prefix: str = "") -> list[str]:
    """Every key path of the schema (`watch[].path`, `storage.bucket`, ...), for docs and tests."""
    paths: list[str] = []
    for key in keys:
        key_path = _join(prefix, key.name)
        paths.append(key_path)
        if key.kind == "section":
            paths.extend(schema_key_paths(key.children, key_path))
        elif key.kind == "sections":
            paths.extend(schema_key_paths(key.children, key_path + "[]"))
    return paths
