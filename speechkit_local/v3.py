"""API v3's request, as the local server validates it: `recognizeFileAsync` bodies.

Pure: a JSON document in, a `V3Request` or a `logic.RequestRejectedError` (400, code 3) out,
as the real service refuses what it cannot read. Both the lowerCamel JSON names and the proto
names are accepted (protobuf's JSON parser does); unknown fields are refused.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from speechkit_local import logic

RECOGNIZE_PATH = "/recognizeFileAsync"
GET_RECOGNITION_PATH = "/getRecognition"
DELETE_RECOGNITION_PATH = "/deleteRecognition"
DEFAULT_PREFIX = "/stt/v3"  # the real service's base path

RESPONSE_TYPE = "type.googleapis.com/google.protobuf.Empty"  # recognizeFileAsync's response
MAX_REQUEST_BYTES = 60 * 1000 * 1000  # "at most 60 MB of request" (base64 content included)
MODELS = frozenset({"general", "general:rc", "general:deprecated"})  # no deferred-general in v3
CONTAINERS = {"OGG_OPUS": "OGG_OPUS", "MP3": "MP3", "WAV": "LINEAR16_PCM"}
SPEAKER_LABELING = frozenset({"SPEAKER_LABELING_ENABLED", "SPEAKER_LABELING_DISABLED"})

_TOP = {"uri": "uri", "content": "content", "recognitionModel": "recognition_model",
        "recognition_model": "recognition_model", "speakerLabeling": "speaker_labeling",
        "speaker_labeling": "speaker_labeling"}  # fmt: skip
_MODEL = {"model": "model", "audioFormat": "audio_format", "audio_format": "audio_format",
          "textNormalization": "text_normalization", "text_normalization": "text_normalization",
          "languageRestriction": "language_restriction",
          "language_restriction": "language_restriction",
          "audioProcessingType": "audio_processing_type",
          "audio_processing_type": "audio_processing_type"}  # fmt: skip


@dataclass(frozen=True)
class V3Request:
    uri: str | None
    content: bytes | None
    model: str = logic.DEFAULT_MODEL
    audio_encoding: str = logic.DEFAULT_AUDIO_ENCODING
    literature_text: bool = False
    speaker_labeling: bool = False
    language_codes: tuple[str, ...] = ()

    @property
    def source(self) -> str:
        """What the logs name: the link (its query is stripped there) or "inline content"."""
        return self.uri if self.uri is not None else "inline content"


def _invalid(message: str) -> logic.RequestRejectedError:
    return logic.RequestRejectedError(logic.CODE_INVALID_ARGUMENT, message)


def _fields(document: Any, names: dict[str, str], where: str) -> dict[str, Any]:
    if not isinstance(document, dict):
        raise _invalid(f"{where}: expected an object")
    found: dict[str, Any] = {}
    for name, value in document.items():
        proto = names.get(name)
        if proto is None:
            raise _invalid(f"{where}: unknown field {name!r}")
        found[proto] = value
    return found


def _text_normalization(value: Any) -> bool:
    """literatureText of textNormalization (the other settings are accepted as they are)."""
    if value is None:
        return False
    if not isinstance(value, dict):
        raise _invalid("textNormalization: expected an object")
    literature = value.get("literatureText", value.get("literature_text", False))
    if not isinstance(literature, bool):
        raise _invalid("textNormalization.literatureText: expected a boolean")
    return literature


def _languages(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise _invalid("languageRestriction: expected an object")
    codes = value.get("languageCode", value.get("language_code", []))
    if not isinstance(codes, list) or not all(isinstance(code, str) for code in codes):
        raise _invalid("languageRestriction.languageCode: expected a list of strings")
    known = {code.lower(): code for code in logic.LANGUAGE_CODES}
    for code in codes:
        if code.lower() not in known:
            raise _invalid(f"languageRestriction.languageCode: unknown language {code!r}")
    return tuple(known[code.lower()] for code in codes)


def _encoding(value: Any) -> str:
    if value is None:
        return logic.DEFAULT_AUDIO_ENCODING
    if not isinstance(value, dict):
        raise _invalid("audioFormat: expected an object")
    container = value.get("containerAudio", value.get("container_audio"))
    if not isinstance(container, dict):
        raise _invalid("audioFormat: only containerAudio is served by this local server")
    kind = container.get("containerAudioType", container.get("container_audio_type"))
    if kind not in CONTAINERS:
        raise _invalid(f"audioFormat.containerAudio.containerAudioType: unknown {kind!r}")
    return CONTAINERS[kind]


def parse_request(document: Any) -> V3Request:
    """A validated recognizeFileAsync body; RequestRejectedError (400, code 3) if not."""
    top = _fields(document, _TOP, "request")
    uri, content = top.get("uri"), top.get("content")
    if (uri is None) == (content is None):
        raise _invalid("exactly one of uri and content must be set")
    audio: bytes | None = None
    if uri is not None and (not isinstance(uri, str) or not uri):
        raise _invalid("uri: expected a non-empty string")
    if content is not None:
        if not isinstance(content, str):
            raise _invalid("content: expected base64 bytes")
        try:
            audio = base64.b64decode(content, validate=True)
        except (binascii.Error, ValueError):
            raise _invalid("content: not valid base64") from None
    model = _fields(top.get("recognition_model") or {}, _MODEL, "recognitionModel")
    name = model.get("model", logic.DEFAULT_MODEL)
    if name not in MODELS:
        raise _invalid(f"recognitionModel.model: unknown model {name!r}")
    labeling = top.get("speaker_labeling") or {}
    if not isinstance(labeling, dict):
        raise _invalid("speakerLabeling: expected an object")
    labeling_value = labeling.get("speakerLabeling", labeling.get("speaker_labeling"))
    if labeling_value is not None and labeling_value not in SPEAKER_LABELING:
        raise _invalid(f"speakerLabeling.speakerLabeling: unknown {labeling_value!r}")
    return V3Request(
        uri=uri, content=audio, model=name,
        audio_encoding=_encoding(model.get("audio_format")),
        literature_text=_text_normalization(model.get("text_normalization")),
        speaker_labeling=labeling_value == "SPEAKER_LABELING_ENABLED",
        language_codes=_languages(model.get("language_restriction")),
    )  # fmt: skip


def as_v2_request(request: V3Request) -> logic.RecognizeRequest:
    """The settings the shared recognition path reads (the audio itself travels apart)."""
    codes = request.language_codes
    language = logic.AUTO_LANGUAGE if logic.AUTO_LANGUAGE in codes else (codes or ("ru-RU",))[0]
    return logic.RecognizeRequest(
        uri=request.uri or "inline:content",
        language_code=language,
        model=request.model,
        literature_text=request.literature_text,
        audio_encoding=request.audio_encoding,
    )


def stream_text(messages: list[dict[str, Any]]) -> str:
    """getRecognition's body: one JSON object per line."""
    return "".join(json.dumps(message, ensure_ascii=False) + "\n" for message in messages)
