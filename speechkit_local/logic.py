"""Pure decisions of the local SpeechKit-compatible server: no sockets, no threads, no clock.

Everything that shapes what a client sees lives here so it can be unit-tested in milliseconds:
request validation (as strict as a protobuf JSON endpoint), authentication, the echo engine's
chunks, protobuf duration and timestamp strings, error bodies, operation objects and the
completion time of an operation. The shapes follow /work/shared/SPEECHKIT.md and the public
Yandex Cloud documentation of API v2.
"""

from __future__ import annotations

import datetime
import re
import unicodedata
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .recognition import (
    NANOSECONDS_PER_SECOND,
    Utterance,
    Word,
    in_time_order,
    v2_chunks,
)

# gRPC status codes used by the service (google.rpc.Code).
CODE_INVALID_ARGUMENT = 3
CODE_DEADLINE_EXCEEDED = 4
CODE_NOT_FOUND = 5
CODE_PERMISSION_DENIED = 7
CODE_RESOURCE_EXHAUSTED = 8
CODE_FAILED_PRECONDITION = 9
CODE_UNIMPLEMENTED = 12
CODE_INTERNAL = 13
CODE_UNAVAILABLE = 14
CODE_UNAUTHENTICATED = 16

# The HTTP status each gRPC code travels with (grpc-gateway's mapping, as Yandex answers).
HTTP_STATUS_BY_CODE: Mapping[int, int] = {
    CODE_INVALID_ARGUMENT: 400,
    CODE_DEADLINE_EXCEEDED: 504,
    CODE_NOT_FOUND: 404,
    CODE_PERMISSION_DENIED: 403,
    CODE_RESOURCE_EXHAUSTED: 429,
    CODE_FAILED_PRECONDITION: 400,
    CODE_UNIMPLEMENTED: 501,
    CODE_INTERNAL: 500,
    CODE_UNAVAILABLE: 503,
    CODE_UNAUTHENTICATED: 401,
}

# Failures that fault injection may answer with, and their gRPC code and message: the
# server's own (5xx), and 400 for a request the service refuses for reasons a client's own
# validation cannot foresee.
INJECTABLE_ERRORS: Mapping[int, tuple[int, str]] = {
    400: (CODE_INVALID_ARGUMENT, "Invalid argument: the service refused the request"),
    500: (CODE_INTERNAL, "Internal error"),
    503: (CODE_UNAVAILABLE, "Service unavailable"),
    504: (CODE_DEADLINE_EXCEEDED, "Deadline exceeded"),
}

RESPONSE_TYPE = "type.googleapis.com/yandex.cloud.ai.stt.v2.LongRunningRecognitionResponse"
INVALID_AUDIO_MESSAGE = "Invalid audio received"
CODE_ABORTED = 10

# How an operation can end in `error`: the input's fault (3), or the service's own trouble.
OPERATION_ERRORS: Mapping[int, str] = {
    CODE_INVALID_ARGUMENT: INVALID_AUDIO_MESSAGE,
    CODE_DEADLINE_EXCEEDED: "Deadline exceeded",
    CODE_RESOURCE_EXHAUSTED: "Resource exhausted",
    CODE_ABORTED: "Aborted",
    CODE_INTERNAL: "Internal error",
    CODE_UNAVAILABLE: "Service unavailable",
}

LANGUAGE_CODES = frozenset(
    {
        "ru-RU",
        "en-US",
        "de-DE",
        "es-ES",
        "fi-FI",
        "fr-FR",
        "he-HE",
        "it-IT",
        "kk-KZ",
        "nl-NL",
        "pl-PL",
        "pt-PT",
        "pt-BR",
        "sv-SE",
        "tr-TR",
        "uz-UZ",
        "auto",
    }
)
MODELS = frozenset({"general", "general:rc", "general:deprecated", "deferred-general"})
# Language codes are case-insensitive (`ru-ru` is valid): the lower-case spelling finds the code.
_LANGUAGE_BY_LOWER = {code.lower(): code for code in LANGUAGE_CODES}
# Languages that only some models serve.
LANGUAGE_MODELS: Mapping[str, frozenset[str]] = {"pt-BR": frozenset({"general:rc"})}
AUTO_LANGUAGE = "auto"  # detected by the service; its text is not normalized
# yandex.cloud.ai.stt.v2.RecognitionSpec.AudioEncoding: protobuf JSON accepts names or numbers.
AUDIO_ENCODINGS: Mapping[str, int] = {
    "AUDIO_ENCODING_UNSPECIFIED": 0,
    "LINEAR16_PCM": 1,
    "OGG_OPUS": 2,
    "MP3": 3,
}
PCM_SAMPLE_RATES = frozenset({8000, 16000, 48000})
PCM_CHANNEL_COUNTS = frozenset({1, 2})

DEFAULT_LANGUAGE_CODE = "ru-RU"  # the service's documented default
DEFAULT_MODEL = "general"  # the service's documented default
DEFAULT_AUDIO_ENCODING = "OGG_OPUS"  # the service's documented default

SECONDS_PER_MINUTE = 60.0
OPERATION_ID_PREFIX = "e03"  # every SpeechKit v2 operation id seen in the docs starts so
OPERATION_ID_LENGTH = 20  # the length of real operation ids


class RequestRejectedError(Exception):
    """A request the service answers with an HTTP error and a gRPC-style body."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def http_status(self) -> int:
        return HTTP_STATUS_BY_CODE[self.code]


def error_body(code: int, message: str) -> dict[str, Any]:
    """The body of an HTTP error answer or of an operation's `error` field."""
    return {"code": code, "message": message, "details": []}


# ---------------------------------------------------------------------------- request validation


@dataclass(frozen=True)
class RecognizeRequest:
    """A validated longRunningRecognize body, fields by their proto names."""

    uri: str
    language_code: str = DEFAULT_LANGUAGE_CODE
    model: str = DEFAULT_MODEL
    profanity_filter: bool = False
    literature_text: bool = False
    audio_encoding: str = DEFAULT_AUDIO_ENCODING
    sample_rate_hertz: int | None = None
    audio_channel_count: int | None = None
    raw_results: bool = False
    folder_id: str | None = None


# JSON name -> proto name. Protobuf's JSON parser accepts both the lowerCamel JSON name and the
# original field name, so the real endpoint does too; anything else is an unknown field.
_TOP_LEVEL_FIELDS = {"config": "config", "audio": "audio"}
_CONFIG_FIELDS = {
    "specification": "specification",
    "folderId": "folder_id",
    "folder_id": "folder_id",
}
_AUDIO_FIELDS = {"uri": "uri", "content": "content"}
_SPECIFICATION_FIELDS = {
    "languageCode": "language_code",
    "language_code": "language_code",
    "model": "model",
    "profanityFilter": "profanity_filter",
    "profanity_filter": "profanity_filter",
    "literatureText": "literature_text",
    "literature_text": "literature_text",
    "audioEncoding": "audio_encoding",
    "audio_encoding": "audio_encoding",
    "sampleRateHertz": "sample_rate_hertz",
    "sample_rate_hertz": "sample_rate_hertz",
    "audioChannelCount": "audio_channel_count",
    "audio_channel_count": "audio_channel_count",
    "rawResults": "raw_results",
    "raw_results": "raw_results",
}
_BOOLEAN_FIELDS = frozenset({"profanity_filter", "literature_text", "raw_results"})
_STRING_FIELDS = frozenset({"language_code", "model"})
_INTEGER_FIELDS = frozenset({"sample_rate_hertz", "audio_channel_count"})
_INT64_MAX = 2**63 - 1


def _invalid(message: str) -> RequestRejectedError:
    return RequestRejectedError(CODE_INVALID_ARGUMENT, message)


def _message_fields(
    value: object, path: str, known: Mapping[str, str]
) -> dict[str, tuple[str, object]]:
    """proto name -> (JSON path, value) of a JSON object; unknown or repeated fields rejected.

    A JSON null means "not set", as in protobuf JSON.
    """
    if not isinstance(value, dict):
        raise _invalid(f'Invalid value at "{path}": expected a JSON object')
    fields: dict[str, tuple[str, object]] = {}
    for json_name, field_value in value.items():
        field_path = f"{path}.{json_name}" if path else json_name
        proto_name = known.get(json_name)
        if proto_name is None:
            raise _invalid(f'Invalid JSON payload: unknown field "{field_path}"')
        if proto_name in fields:
            raise _invalid(f'Invalid JSON payload: field "{field_path}" is set twice')
        if field_value is not None:
            fields[proto_name] = (field_path, field_value)
    return fields


def _as_bool(path: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise _invalid(f'Invalid value at "{path}": expected a boolean, got {_show(value)}')
    return value


def _as_string(path: str, value: object) -> str:
    if not isinstance(value, str):
        raise _invalid(f'Invalid value at "{path}": expected a string, got {_show(value)}')
    return value


def _as_int64(path: str, value: object) -> int:
    # Protobuf JSON writes int64 as a string and accepts a number or a decimal string.
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif (isinstance(value, float) and value.is_integer()) or (
        isinstance(value, str) and re.fullmatch(r"-?[0-9]+", value)
    ):
        number = int(value)
    if number is None or abs(number) > _INT64_MAX:
        raise _invalid(f'Invalid value at "{path}": expected an integer, got {_show(value)}')
    return number


def _as_encoding(path: str, value: object) -> str:
    if isinstance(value, str) and value in AUDIO_ENCODINGS:
        name = value
    elif (
        isinstance(value, int) and not isinstance(value, bool) and value in AUDIO_ENCODINGS.values()
    ):
        name = next(key for key, number in AUDIO_ENCODINGS.items() if number == value)
    else:
        raise _invalid(
            f'Invalid value at "{path}": {_show(value)} is not one of '
            + ", ".join(name for name in AUDIO_ENCODINGS if name != "AUDIO_ENCODING_UNSPECIFIED")
        )
    return DEFAULT_AUDIO_ENCODING if name == "AUDIO_ENCODING_UNSPECIFIED" else name


def _show(value: object) -> str:
    shown = repr(value) if not isinstance(value, str) else f'"{value}"'
    return shown if len(shown) <= 60 else shown[:57] + "..."


def parse_recognize_request(body: object, *, folder_id: str | None) -> RecognizeRequest:
    """Validate a decoded longRunningRecognize JSON body; raise RequestRejectedError (400/3).

    `folder_id` is the folder the server stands for: a request naming any other folder is
    refused, as the real service refuses a folder the credentials do not belong to.
    """
    top = _message_fields(body, "", _TOP_LEVEL_FIELDS)
    config = _message_fields(top["config"][1], "config", _CONFIG_FIELDS) if "config" in top else {}
    specification = (
        _message_fields(config["specification"][1], "config.specification", _SPECIFICATION_FIELDS)
        if "specification" in config
        else {}
    )
    if "audio" not in top:
        raise _invalid('Invalid argument: "audio.uri" is required')
    audio = _message_fields(top["audio"][1], "audio", _AUDIO_FIELDS)
    if "content" in audio:
        raise _invalid(
            "Invalid argument: audio.content is not supported for long running recognition; "
            "use audio.uri"
        )
    if "uri" not in audio:
        raise _invalid('Invalid argument: "audio.uri" is required')
    uri = _as_string(*audio["uri"])
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _invalid('Invalid argument: "audio.uri" must be an http(s) URL of an object')

    values: dict[str, Any] = {}
    for name, (path, value) in specification.items():
        if name in _BOOLEAN_FIELDS:
            values[name] = _as_bool(path, value)
        elif name in _STRING_FIELDS:
            values[name] = _as_string(path, value)
        elif name in _INTEGER_FIELDS:
            values[name] = _as_int64(path, value)
        else:
            values[name] = _as_encoding(path, value)

    requested_language = values.get("language_code", DEFAULT_LANGUAGE_CODE)
    language_code = _LANGUAGE_BY_LOWER.get(requested_language.lower())
    if language_code is None:
        raise _invalid(f"Invalid argument: unsupported languageCode {_show(requested_language)}")
    values["language_code"] = language_code
    model = values.get("model", DEFAULT_MODEL)
    if model not in MODELS:
        raise _invalid(f"Invalid argument: unsupported model {_show(model)}")
    if model not in LANGUAGE_MODELS.get(language_code, MODELS):
        raise _invalid(
            f"Invalid argument: model {_show(model)} does not support languageCode "
            f"{_show(language_code)}"
        )
    encoding = values.get("audio_encoding", DEFAULT_AUDIO_ENCODING)
    channel_count = values.get("audio_channel_count")
    sample_rate = values.get("sample_rate_hertz")
    if encoding == "OGG_OPUS" and channel_count is not None:
        raise _invalid("Invalid argument: audioChannelCount must not be set for OGG_OPUS")
    if encoding == "LINEAR16_PCM":
        if sample_rate is not None and sample_rate not in PCM_SAMPLE_RATES:
            raise _invalid(f"Invalid argument: unsupported sampleRateHertz {sample_rate}")
        if channel_count is not None and channel_count not in PCM_CHANNEL_COUNTS:
            raise _invalid(f"Invalid argument: unsupported audioChannelCount {channel_count}")

    requested_folder: str | None = None
    if "folder_id" in config:
        requested_folder = _as_string(*config["folder_id"])
        if requested_folder != folder_id:
            raise _invalid(
                f"Invalid argument: folderId {_show(requested_folder)} does not match the "
                "folder of the credentials"
            )
    return RecognizeRequest(uri=uri, folder_id=requested_folder, **values)


# ---------------------------------------------------------------------------- authentication


@dataclass(frozen=True)
class AuthOutcome:
    """Who the caller is, or why the request is refused (a RequestRejectedError to answer)."""

    principal: str | None
    refusal: RequestRejectedError | None


def parse_authorization(header: str | None) -> tuple[str, str] | None:
    """("api-key" | "bearer", credential) from an Authorization header; None if unusable."""
    if not header:
        return None
    scheme, _, credential = header.strip().partition(" ")
    credential = credential.strip()
    scheme = scheme.lower()
    if scheme not in ("api-key", "bearer") or not credential:
        return None
    return scheme, credential


def authenticate(
    header: str | None,
    *,
    api_keys: Sequence[str],
    forbidden_api_keys: Sequence[str],
    bearer_tokens: Mapping[str, float | None],
    service_account_id: str,
    now: float,
) -> AuthOutcome:
    """Check an Authorization header against the configured credentials.

    `bearer_tokens` maps each IAM token to its expiry (epoch seconds) or None for never.
    A forbidden key is a real key of a service account lacking the role: 403/7.
    """
    unauthenticated = AuthOutcome(
        None, RequestRejectedError(CODE_UNAUTHENTICATED, "Unauthenticated")
    )
    parsed = parse_authorization(header)
    if parsed is None:
        return unauthenticated
    scheme, credential = parsed
    if scheme == "api-key":
        if credential in forbidden_api_keys:
            return AuthOutcome(
                None, RequestRejectedError(CODE_PERMISSION_DENIED, "Permission denied")
            )
        if credential in api_keys:
            return AuthOutcome(service_account_id, None)
        return unauthenticated
    if credential not in bearer_tokens:
        return unauthenticated
    expires_at = bearer_tokens[credential]
    if expires_at is not None and now >= expires_at:
        return unauthenticated
    return AuthOutcome(service_account_id, None)


# ---------------------------------------------------------------------------- echo engine

# Closing quotes and brackets may follow the end mark (guillemets, curly quotes, parentheses).
_SENTENCE_END = re.compile("[.!?\u2026][\"'\u00bb\u201d\u2019)\\]]*$")


def split_sentences(text: str) -> list[str]:
    """Sentences of `text`, each ending after . ! ? or … (closing quotes/brackets kept).

    Runs of whitespace become one space, as the service never returns layout.
    """
    sentences: list[str] = []
    current: list[str] = []
    for token in text.split():
        current.append(token)
        if _SENTENCE_END.search(token):
            sentences.append(" ".join(current))
            current = []
    if current:
        sentences.append(" ".join(current))
    return sentences


def _is_punctuation(character: str) -> bool:
    return unicodedata.category(character).startswith("P")


def normalize_words(sentence: str) -> list[str]:
    """The raw words of a sentence: `words[]` always, and the text without literature_text.

    Lower case, punctuation stripped from the edges of each word ("кто-то" and "don't" keep
    their inner marks), tokens that were only punctuation (a dash) dropped.
    """
    words: list[str] = []
    for token in sentence.split():
        start, end = 0, len(token)
        while start < end and _is_punctuation(token[start]):
            start += 1
        while end > start and _is_punctuation(token[end - 1]):
            end -= 1
        if start < end:
            words.append(token[start:end].lower())
    return words


def format_timestamp(epoch_seconds: float) -> str:
    """An RFC 3339 UTC timestamp with whole seconds and 'Z', like the service's createdAt."""
    moment = datetime.datetime.fromtimestamp(epoch_seconds, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def echo_utterances(
    channel_texts: Sequence[str | None],
    duration_seconds: float,
    speakers: Sequence[int] = (),
) -> list[Utterance]:
    """The echo engine: one utterance per sentence of each channel's stored transcript.

    `channel_texts[i]` is the text of channel i+1 (None: nothing said on that channel). Each
    channel's words share its whole duration evenly; a sentence without words is dropped.
    `speakers` gives the 0-based speaker of each sentence of channel 1 in turn (the last one
    holds for the rest); empty: no speaker separation.
    """
    duration_nanoseconds = max(0, round(duration_seconds * NANOSECONDS_PER_SECOND))
    utterances: list[Utterance] = []
    for channel, text in enumerate(channel_texts):
        if not text:
            continue
        sentences = [(sentence, normalize_words(sentence)) for sentence in split_sentences(text)]
        sentences = [(sentence, words) for sentence, words in sentences if words]
        word_total = sum(len(words) for _, words in sentences)
        index = 0
        for sentence, words in sentences:
            timed = []
            for word in words:
                start = index * duration_nanoseconds // word_total
                end = (index + 1) * duration_nanoseconds // word_total
                timed.append(Word(word, start, end))
                index += 1
            number = len(utterances)
            speaker = speakers[min(number, len(speakers) - 1)] if speakers and not channel else None
            utterances.append(
                Utterance(
                    channel, tuple(timed), sentence, timed[0].start_ns, timed[-1].end_ns,
                    speaker=speaker,
                )
            )  # fmt: skip
    return in_time_order(utterances)


SPEAKERS_COMMENT = "SPEAKERS"  # "1,2,1": who says each sentence of a mono TRANSCRIPT (1-based)


def speaker_turns(comments: Mapping[str, str], channels: int) -> list[int]:
    """The 0-based speakers of the echo engine's sentences, from the SPEAKERS comment of a mono
    file ("1,2,1", 1-based); empty without it, or for stereo (speakers only in mono audio)."""
    text = comments.get(SPEAKERS_COMMENT)
    if not text or channels != 1:
        return []
    turns = []
    for part in text.split(","):
        part = part.strip()  # noqa: PLW2901 - the trimmed item
        if part.isdigit() and int(part) >= 1:
            turns.append(int(part) - 1)
    return turns


def build_echo_chunks(
    channel_texts: Sequence[str | None], duration_seconds: float, *, literature_text: bool
) -> list[dict[str, Any]]:
    """The echo engine's v2 chunks, ordered by start time (see `recognition.v2_chunks`)."""
    return v2_chunks(
        echo_utterances(channel_texts, duration_seconds), literature_text=literature_text
    )


def channel_transcripts(comments: Mapping[str, str], channels: int) -> list[str | None]:
    """Each channel's stored transcript: TRANSCRIPT for channel 1, TRANSCRIPT_CH2 for channel 2."""
    texts: list[str | None] = [comments.get("TRANSCRIPT")]
    texts.extend(comments.get(f"TRANSCRIPT_CH{number}") for number in range(2, channels + 1))
    return texts


def recognition_response(chunks: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The `response` of a done operation; no `chunks` key at all when nothing was said."""
    response: dict[str, Any] = {"@type": RESPONSE_TYPE}
    if chunks:
        response["chunks"] = list(chunks)
    return response


# ---------------------------------------------------------------------------- operations


def completion_delay_seconds(
    duration_seconds: float,
    channels: int,
    *,
    seconds_per_minute: float,
    base_delay_seconds: float,
) -> float:
    """How long recognition takes: about `seconds_per_minute` per audio minute per channel."""
    return base_delay_seconds + seconds_per_minute * (duration_seconds / SECONDS_PER_MINUTE) * max(
        1, channels
    )


def operation_json(
    *,
    operation_id: str,
    created_at: float,
    created_by: str,
    modified_at: float,
    response: Mapping[str, Any] | None = None,
    error: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """An operation object in the service's field order; done when it has a response or error."""
    body: dict[str, Any] = {"done": response is not None or error is not None}
    if error is not None:
        body["error"] = dict(error)
    elif response is not None:
        body["response"] = dict(response)
    body["id"] = operation_id
    body["createdAt"] = format_timestamp(created_at)
    body["createdBy"] = created_by
    body["modifiedAt"] = format_timestamp(modified_at)
    return body


def make_operation_id(random_hex: str) -> str:
    """'e03' followed by hex digits, 20 characters in all, like the service's ids."""
    needed = OPERATION_ID_LENGTH - len(OPERATION_ID_PREFIX)
    if len(random_hex) < needed:
        raise ValueError(f"need {needed} hex digits, got {len(random_hex)}")
    return OPERATION_ID_PREFIX + random_hex[:needed]


def is_forgotten(done_at: float | None, *, now: float, retention_seconds: float) -> bool:
    """Results are kept `retention_seconds` after completion; a later poll gets 404."""
    return done_at is not None and now > done_at + retention_seconds


# ---------------------------------------------------------------------------- URIs


def strip_query(uri: str) -> str:
    """A URI safe to log: a presigned link's query carries its signature, so drop it."""
    parts = urllib.parse.urlsplit(uri)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def _host_port(parts: urllib.parse.SplitResult) -> tuple[str, int]:
    default_port = 443 if parts.scheme == "https" else 80
    return (parts.hostname or "").lower(), parts.port or default_port


def uri_object_key(uri: str) -> str:
    """`bucket/key` of a path-style object URI (percent-decoded, query ignored)."""
    return urllib.parse.unquote(urllib.parse.urlsplit(uri).path.lstrip("/"))


def storage_object_location(uri: str, storage_endpoint: str | None) -> tuple[str, str] | None:
    """(bucket, key) when `uri` points into the configured storage endpoint, else None.

    The real service reads `https://storage.yandexcloud.net/<bucket>/<key>` with its own
    rights and ignores the query string; path-style addressing only.
    """
    if storage_endpoint is None:
        return None
    parts = urllib.parse.urlsplit(uri)
    endpoint = urllib.parse.urlsplit(storage_endpoint)
    if _host_port(parts) != _host_port(endpoint):
        return None
    bucket, _, key = uri_object_key(uri).partition("/")
    if not bucket or not key:
        return None
    return bucket, key
