"""Every config key, declared once: the typed sections of the config.

Each field made with `key()` is a key of the YAML file: its name, its type (the annotation), its
meaning, its default and its constraints are all written here and nowhere else. Validation, the
typed config object and the list of keys `config.example.yaml` must document follow from these
classes (see `schema.py`). Every default is a named constant with the reason it is what it is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from daemon.config.schema import Key, key, key_paths, keys_of, section
from daemon.secrets import Secret, ServiceAccountKey

# Defaults, each with the reason it is what it is.
# Recordings as people have them: Ogg Opus goes up as it is, the rest is converted. The content
# decides how a file is read; these names only decide which files are looked at.
DEFAULT_PATTERNS = (
    "*.ogg", "*.opus", "*.oga", "*.wav", "*.mp3", "*.m4a", "*.aac", "*.flac", "*.amr", "*.wma",
    "*.aiff", "*.aif", "*.webm", "*.mkv", "*.mka", "*.mp4", "*.mov", "*.3gp",
)  # fmt: skip
DEFAULT_AFTER_DONE = "keep"  # the audio is the user's: moved or deleted only when asked
DEFAULT_AFTER_DONE_DAYS = 0.0  # 0: at once, as after_done always did
DEFAULT_AFTER_FAILED = "keep"  # a failed file waits for a person and `retry`
DEFAULT_AFTER_FAILED_DAYS = 0.0  # 0: at once (only when after_failed is move or delete)
# State rows of files gone (deleted, moved away, replaced) are forgotten after this long: a quarter
# of a year of history for `status`, and far beyond the 3 days a result can be reused by a copy.
DEFAULT_STATE_RETENTION_DAYS = 90.0
MIN_STATE_RETENTION_DAYS = 3.0  # a copy of a file reuses its result for up to 3 days (the row)
DEFAULT_LANGUAGE = "ru-RU"  # the service's own default
DEFAULT_MODEL = "general"  # the service's own default
DEFAULT_ENDPOINT_URL = "https://storage.yandexcloud.net"  # Yandex Object Storage
DEFAULT_REGION = "ru-central1"  # the only Yandex Object Storage region
DEFAULT_PREFIX = "speechkit-watch/"  # keeps our objects apart from anything else in the bucket
DEFAULT_LINK = "presigned"  # works with a private bucket, whoever owns the API key
DEFAULT_RECOGNIZE_URL = "https://transcribe.api.cloud.yandex.net/speech/stt/v2/longRunningRecognize"
DEFAULT_OPERATIONS_URL = "https://operation.api.cloud.yandex.net/operations"
DEFAULT_API = "v2"  # what every existing config was written for; v3 is chosen, not imposed
# API v3's base: /recognizeFileAsync, /getRecognition and /deleteRecognition are appended.
DEFAULT_STT_V3_URL = "https://stt.api.cloud.yandex.net/stt/v3"
DEFAULT_STATUS_CHECKS_PER_SECOND = 5  # the service's v3 quota per cloud folder
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
APIS = ("v2", "v3")
LINK_KINDS = ("presigned", "plain")
# The ways to authenticate to the recognition API; a config sets exactly one.
CREDENTIAL_KEYS = ("api_key", "iam_token", "service_account_key_file", "metadata_service")
AFTER_DONE_ACTIONS = ("keep", "move", "delete")
DEFAULT_HOOK_TIMEOUT = 60.0  # a notification hook that takes a minute is stuck
WEBHOOK_EVENTS = ("done", "failed")  # how a file ends
DEFAULT_WEBHOOK_TIMEOUT = 10.0  # one delivery attempt; a receiver should answer in well under 1 s
# Loopback: the endpoint is opened to a scraper on purpose (README, "Metrics"), never by default.
DEFAULT_METRICS_LISTEN = "127.0.0.1:9464"  # 9464: the port Prometheus exporters commonly use
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
# v3 has no cheap deferred model, and no rawResults (its numbers are always normalized).
V3_MODELS = ("general", "general:rc", "general:deprecated")
# Keys of `recognition` that only one API understands: set to anything but their default with
# the other API, they are a config error naming both keys (see validate.recognition_checks).
V3_ONLY_KEYS = ("speaker_labeling", "languages", "phone_formatting")
V2_ONLY_KEYS = ("raw_results",)


# Conversions applied when the typed config is built.


def _absolute(path: Path) -> Path:
    """Absolute for good (validation already takes a relative path from the config's folder)."""
    return path.absolute()


def _capped_presign(seconds: int) -> int:
    return min(seconds, MAX_PRESIGN_SECONDS)


def _without_trailing_slash(url: str) -> str:
    return url.rstrip("/")


def _unique(items: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


def _enabled(flag: bool, name: str) -> str:
    return f"{name}_ENABLED" if flag else f"{name}_DISABLED"


# ---------------------------------------------------------------------------------------------
# The sections, in the order of the file (and of its problems)


@section
class Recognition:
    language: str = key(
        "languageCode, any case (pt-BR needs model general:rc; auto: detected, never normalized)",
        default=DEFAULT_LANGUAGE, kind="language", choices=LANGUAGES,
    )  # fmt: skip
    model: str = key(
        "model: general, general:rc, general:deprecated, deferred-general (cheap, within 24 h)",
        default=DEFAULT_MODEL, choices=MODELS,
    )  # fmt: skip
    profanity_filter: bool = key("profanityFilter", default=False)
    literature_text: bool = key("literature_text: punctuation and capitals", default=False)
    raw_results: bool = key("rawResults: numbers as words (v2 only)", default=False)
    speaker_labeling: bool = key(
        "v3 only: [speaker N] labels, at most two speakers, mono files only (a stereo file is "
        "recognised by channel, without speaker labels)",
        default=False,
    )  # fmt: skip
    languages: tuple[str, ...] = key(
        "v3 only: languages the audio may be in (a list), or auto; empty: [language]",
        default=(), kind="languages", item_choices=LANGUAGES,
    )  # fmt: skip
    phone_formatting: bool = key("v3 only: phone numbers written as numbers", default=False)

    def settings(self, api: str, channels: int) -> dict[str, Any]:
        """What a request of `api` says about recognition for a file of `channels` channels:
        the recorded `specification` of a file version (its dedup key: v2 and v3 settings never
        look alike, and every setting that changes the result is in it)."""
        if api == "v3":
            return self.v3_request(channels)
        return self.specification()

    def v3_request(self, channels: int) -> dict[str, Any]:
        """The recognizeFileAsync body without the audio (`uri` or `content`). Speaker labeling
        is asked only for mono audio (the service labels speakers of one channel only)."""
        languages = list(self.languages) or [self.language]
        request: dict[str, Any] = {
            "recognitionModel": {
                "model": self.model,
                "audioFormat": {"containerAudio": {"containerAudioType": "OGG_OPUS"}},
                "textNormalization": {
                    "textNormalization": "TEXT_NORMALIZATION_ENABLED",
                    "profanityFilter": self.profanity_filter,
                    "literatureText": self.literature_text,
                    "phoneFormattingMode": _enabled(self.phone_formatting, "PHONE_FORMATTING_MODE"),
                },
                "languageRestriction": {"restrictionType": "WHITELIST", "languageCode": languages},
                "audioProcessingType": "FULL_DATA",
            },
        }
        if self.speaker_labeling and channels == 1:
            request["speakerLabeling"] = {"speakerLabeling": "SPEAKER_LABELING_ENABLED"}
        return request

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


def described(specification: dict[str, Any]) -> tuple[Any, Any]:
    """(model, language) of a recorded specification of either API, for people and webhooks;
    v3's language is its list of languages joined by commas."""
    v3 = specification.get("recognitionModel")
    if not isinstance(v3, dict):
        return specification.get("model"), specification.get("languageCode")
    restriction = v3.get("languageRestriction")
    codes = restriction.get("languageCode") if isinstance(restriction, dict) else None
    return v3.get("model"), ",".join(codes) if isinstance(codes, list) else None


@section
class WatchFolder:
    path: Path = key("the folder to watch", convert=_absolute)
    recursive: bool = key("also watch subfolders", default=False)
    patterns: tuple[str, ...] = key(
        "file name patterns, matched case-insensitively", default=DEFAULT_PATTERNS
    )
    output_dir: Path | None = key(
        "where outputs go; null: beside the audio", default=None, convert=_absolute
    )
    polling: bool = key("poll instead of inotify (network mounts send no events)", default=False)
    after_done: str = key(
        "what happens to the audio once transcribed",
        default=DEFAULT_AFTER_DONE, choices=AFTER_DONE_ACTIONS,
    )  # fmt: skip
    move_to: Path | None = key(
        "folder for after_done: move (subfolders kept)", default=None, convert=_absolute
    )
    after_done_days: float = key(
        "days after the transcript is written before after_done acts; 0: at once",
        default=DEFAULT_AFTER_DONE_DAYS, minimum=0,
    )  # fmt: skip
    after_failed: str = key(
        "what happens to the audio of a failed file: keep (retry can take it), move or delete",
        default=DEFAULT_AFTER_FAILED, choices=AFTER_DONE_ACTIONS,
    )  # fmt: skip
    after_failed_days: float = key(
        "days after a file failed before after_failed acts; 0: at once",
        default=DEFAULT_AFTER_FAILED_DAYS, minimum=0,
    )  # fmt: skip
    failed_move_to: Path | None = key(
        "folder for after_failed: move (subfolders kept)", default=None, convert=_absolute
    )
    recognition: Recognition = key(
        "per-folder overrides of `recognition`",
        default_factory=Recognition, inherits="recognition",
    )  # fmt: skip


@section
class Storage:
    endpoint_url: str = key("S3 endpoint", default=DEFAULT_ENDPOINT_URL, kind="url")
    region: str = key("S3 region", default=DEFAULT_REGION)
    bucket: str = key("bucket name")
    prefix: str = key("object key prefix", default=DEFAULT_PREFIX)
    access_key_id: Secret = key("static access key id")
    secret_access_key: Secret = key("static secret access key")
    link: str = key(
        "audio.uri form: presigned URL or plain object URL",
        default=DEFAULT_LINK, choices=LINK_KINDS,
    )  # fmt: skip
    presign_seconds: int = key(
        "lifetime of presigned links",
        default=DEFAULT_PRESIGN_SECONDS, minimum=60, convert=_capped_presign,
    )  # fmt: skip
    delete_after: bool = key("delete the object once the result is saved", default=True)


@section
class SpeechKit:
    """One credential is set: api_key, iam_token, service_account_key or metadata_service."""

    api_key: Secret | None = key("service account API key (Authorization: Api-Key)", default=None)
    iam_token: Secret | None = key(
        "a static IAM token (expires within 12 h: for trials only)", default=None
    )
    service_account_key_file: Path | None = key(
        "authorized key JSON of a service account (`yc iam key create`); tokens are renewed",
        default=None,
    )
    service_account_key: ServiceAccountKey | None = None  # that file, parsed at load
    metadata_service: bool = key(
        "take tokens from the VM metadata service (the VM's service account)", default=False
    )
    iam_url: str = key(
        "IAM token exchange endpoint (service_account_key_file)",
        default=DEFAULT_IAM_URL, kind="url",
    )  # fmt: skip
    metadata_url: str = key(
        "metadata service token endpoint (metadata_service)",
        default=DEFAULT_METADATA_URL, kind="url",
    )  # fmt: skip
    recognize_url: str = key(
        "longRunningRecognize endpoint", default=DEFAULT_RECOGNIZE_URL, kind="url"
    )
    api: str = key(
        "v2 (longRunningRecognize) or v3 (recognizeFileAsync: speaker labels, several "
        "languages, audio inline without storage)",
        default=DEFAULT_API, choices=APIS,
    )  # fmt: skip
    stt_v3_url: str = key(
        "API v3 base; /recognizeFileAsync, /getRecognition, /deleteRecognition are appended",
        default=DEFAULT_STT_V3_URL, kind="url", convert=_without_trailing_slash,
    )  # fmt: skip
    operations_url: str = key(
        "operations endpoint (both APIs)",
        default=DEFAULT_OPERATIONS_URL, kind="url", convert=_without_trailing_slash,
    )  # fmt: skip
    request_timeout_seconds: float = key(
        "timeout of every API request", default=DEFAULT_REQUEST_TIMEOUT, minimum=1
    )


@section
class Polling:
    seconds_per_minute: float = key(
        "expected processing time per audio minute per channel (first check)",
        default=DEFAULT_POLL_SECONDS_PER_MINUTE, minimum=0,
    )  # fmt: skip
    max_interval_seconds: float = key(
        "cap of the backoff between later checks", default=DEFAULT_POLL_MAX_INTERVAL, minimum=1
    )


@section
class Quota:
    submissions_per_hour: int = key(
        "longRunningRecognize calls per hour", default=DEFAULT_SUBMISSIONS_PER_HOUR, minimum=1
    )
    status_checks_per_hour: int = key(
        "operation status checks per hour (v2)", default=DEFAULT_STATUS_CHECKS_PER_HOUR, minimum=1
    )
    status_checks_per_second: int = key(
        "operation status checks per second (v3)",
        default=DEFAULT_STATUS_CHECKS_PER_SECOND, minimum=1,
    )  # fmt: skip


@section
class Hook:
    command: tuple[str, ...] = key("argv of the program, no shell")
    timeout_seconds: float = key(
        "the program is killed after this long", default=DEFAULT_HOOK_TIMEOUT, minimum=1
    )


@section
class Webhook:
    url: str = key("where each event is POSTed (JSON, signed)", kind="url")
    secret: Secret = key("HMAC-SHA256 key of the signature header")
    events: tuple[str, ...] = key(
        "which endings are sent: done, failed",
        default=WEBHOOK_EVENTS, item_choices=WEBHOOK_EVENTS, convert=_unique,
    )  # fmt: skip
    timeout_seconds: float = key(
        "one delivery attempt gives up after this long (then retried later)",
        default=DEFAULT_WEBHOOK_TIMEOUT, minimum=1,
    )  # fmt: skip


@section
class Metrics:
    listen: str = key(
        "HOST:PORT of the Prometheus endpoint (/metrics); keep it on loopback",
        default=DEFAULT_METRICS_LISTEN,
    )  # fmt: skip


@section
class Config:
    source: Path  # the file it was loaded from
    watch: tuple[WatchFolder, ...] = key("folders to watch (one or more)")
    recognition: Recognition = key(
        "maps to config.specification (v2) or recognitionModel (v3) of each request",
        default_factory=Recognition,
    )
    storage: Storage | None = key(
        "the S3-compatible bucket the audio is uploaded to; with api v3 it may be left out: "
        "the audio then goes inline in the request (up to 44.9 MB of audio)",
        default=None,
    )  # fmt: skip
    speechkit: SpeechKit = key("the recognition API")
    polling: Polling = key("status checks of pending operations", default_factory=Polling)
    quota: Quota = key(
        "calls per hour (v3 status checks: per second) the daemon allows itself (sliding window)",
        default_factory=Quota,
    )
    auth_retry_seconds: float = key(
        "while credentials are refused, work that needs them is retried this often",
        default=DEFAULT_AUTH_RETRY_SECONDS, minimum=1,
    )  # fmt: skip
    state_file: Path = key("SQLite state file", default=Path(DEFAULT_STATE_FILE), convert=_absolute)
    settle_seconds: float = key(
        "quiet time before a file counts as completely written",
        default=DEFAULT_SETTLE_SECONDS, minimum=0,
    )  # fmt: skip
    rescan_seconds: float = key(
        "period of the safety-net rescan of every folder",
        default=DEFAULT_RESCAN_SECONDS, minimum=1,
    )  # fmt: skip
    concurrency: int = key(
        "files uploaded/submitted/checked in parallel", default=DEFAULT_CONCURRENCY, minimum=1
    )
    state_retention_days: float = key(
        "rows of files gone (deleted, moved, replaced) are forgotten this many days after their "
        "last change", default=DEFAULT_STATE_RETENTION_DAYS, minimum=MIN_STATE_RETENTION_DAYS,
    )  # fmt: skip
    on_complete: Hook | None = key(
        "a program run after each file ends (done or failed)", default=None
    )
    webhooks: tuple[Webhook, ...] = key(
        "signed HTTP POSTs when a file ends, delivered at least once", default=()
    )
    metrics: Metrics | None = key("an opt-in Prometheus endpoint", default=None)
    outputs: tuple[str, ...] = key(
        "outputs written beside the audio",
        default=DEFAULT_OUTPUTS, item_choices=OUTPUT_FORMATS, convert=_unique,
    )  # fmt: skip
    log_level: str = key(
        "debug, info, warning or error", default=DEFAULT_LOG_LEVEL, choices=LOG_LEVELS
    )
    # Not errors: worth a line at start (`run` logs them, `check` prints them).
    warnings: tuple[str, ...] = ()

    def secrets(self) -> list[str]:
        """Every secret value in this config (for redaction and the tests that look for leaks)."""
        speechkit = self.speechkit
        storage = self.storage
        values = [
            storage.access_key_id.reveal() if storage else "",
            storage.secret_access_key.reveal() if storage else "",
            speechkit.api_key.reveal() if speechkit.api_key else "",
            speechkit.iam_token.reveal() if speechkit.iam_token else "",
        ]
        if speechkit.service_account_key is not None:
            values.extend(speechkit.service_account_key.secret_texts())
        values.extend(webhook.secret.reveal() for webhook in self.webhooks)
        return [value for value in values if value]


SCHEMA: tuple[Key, ...] = keys_of(Config)


def schema_key_paths(keys: tuple[Key, ...] = SCHEMA, prefix: str = "") -> list[str]:
    """Every key path of the declaration (`watch[].path`, `storage.bucket`, ...), for docs and
    tests."""
    return key_paths(keys, prefix)
