"""API v3 in the config: the choice of API, v3-only options, cross-key errors, the request."""

from __future__ import annotations

from typing import Any

from daemon.config.declaration import described
from tests.unit.test_config import minimal, parse, problems

V3 = {"api_key": "${YC_API_KEY}", "api": "v3"}


def v3(**overrides: Any) -> dict[str, Any]:
    document = minimal(speechkit=V3, **overrides)
    del document["storage"]
    return document


def test_api_v2_stays_the_default_and_storage_is_required_with_it() -> None:
    settings = parse(minimal())
    assert settings.speechkit.api == "v2"
    assert settings.speechkit.stt_v3_url == "https://stt.api.cloud.yandex.net/stt/v3"
    document = minimal()
    del document["storage"]
    assert problems(document) == [
        "conf.yaml: at 'storage': required with 'speechkit.api' v2 (only API v3 can take the "
        "audio inline, without a bucket)"
    ]


def test_api_v3_needs_no_storage_and_builds_the_documented_request() -> None:
    settings = parse(
        v3(recognition={"languages": ["ru-ru", "EN-us"], "speaker_labeling": True,
                        "literature_text": True, "phone_formatting": True})
    )  # fmt: skip
    assert settings.storage is None
    assert settings.secrets() == ["api-secret"]
    mono = settings.recognition.settings("v3", channels=1)
    assert mono == {
        "recognitionModel": {
            "model": "general",
            "audioFormat": {"containerAudio": {"containerAudioType": "OGG_OPUS"}},
            "textNormalization": {
                "textNormalization": "TEXT_NORMALIZATION_ENABLED",
                "profanityFilter": False,
                "literatureText": True,
                "phoneFormattingMode": "PHONE_FORMATTING_MODE_ENABLED",
            },
            "languageRestriction": {"restrictionType": "WHITELIST",
                                    "languageCode": ["ru-RU", "en-US"]},
            "audioProcessingType": "FULL_DATA",
        },
        "speakerLabeling": {"speakerLabeling": "SPEAKER_LABELING_ENABLED"},
    }  # fmt: skip
    # Speaker labeling is for mono audio: a stereo file is recognised by channel.
    assert "speakerLabeling" not in settings.recognition.settings("v3", channels=2)
    # v2 and v3 settings never look alike, so dedup never shares their results.
    assert settings.recognition.settings("v2", 1) != mono


def test_languages_default_to_language_and_take_auto() -> None:
    settings = parse(v3(recognition={"language": "en-US"}))
    restriction = settings.recognition.settings("v3", 1)["recognitionModel"]["languageRestriction"]
    assert restriction["languageCode"] == ["en-US"]
    auto = parse(v3(recognition={"languages": "auto"})).recognition
    assert auto.languages == ("auto",)
    assert problems(v3(recognition={"languages": "english"})) == [
        "conf.yaml: at 'recognition.languages': expected a list of language codes or auto, "
        "got 'english'"
    ]


def test_v3_only_options_with_v2_and_v2_only_ones_with_v3_name_both_keys() -> None:
    found = problems(
        minimal(
            recognition={"speaker_labeling": True, "phone_formatting": True},
            watch=[{"path": "/srv/inbox", "recognition": {"languages": ["en-US"]}}],
        )
    )
    assert found == [
        "conf.yaml: at 'recognition.speaker_labeling': exists only in SpeechKit API v3, and "
        "'speechkit.api' is v2: set speechkit.api: v3, or remove speaker_labeling",
        "conf.yaml: at 'recognition.phone_formatting': exists only in SpeechKit API v3, and "
        "'speechkit.api' is v2: set speechkit.api: v3, or remove phone_formatting",
        "conf.yaml: at 'watch[0].recognition.speaker_labeling': exists only in SpeechKit API "
        "v3, and 'speechkit.api' is v2: set speechkit.api: v3, or remove speaker_labeling",
        "conf.yaml: at 'watch[0].recognition.languages': exists only in SpeechKit API v3, and "
        "'speechkit.api' is v2: set speechkit.api: v3, or remove languages",
        "conf.yaml: at 'watch[0].recognition.phone_formatting': exists only in SpeechKit API "
        "v3, and 'speechkit.api' is v2: set speechkit.api: v3, or remove phone_formatting",
    ]
    found = problems(v3(recognition={"model": "deferred-general", "raw_results": True}))
    assert found == [
        "conf.yaml: at 'recognition.raw_results': exists only in SpeechKit API v2, and "
        "'speechkit.api' is v3: set speechkit.api: v2, or remove raw_results",
        "conf.yaml: at 'recognition.model': deferred-general exists only in SpeechKit API v2, "
        "and 'speechkit.api' is v3: use one of general, general:rc, general:deprecated, or "
        "speechkit.api: v2",
    ]


def test_per_folder_settings_differ_as_today() -> None:
    settings = parse(
        v3(watch=[{"path": "/srv/a", "recognition": {"speaker_labeling": True}},
                  {"path": "/srv/b"}])
    )  # fmt: skip
    first, second = settings.watch
    assert "speakerLabeling" in first.recognition.settings("v3", 1)
    assert "speakerLabeling" not in second.recognition.settings("v3", 1)


def test_model_and_language_are_told_for_either_api() -> None:
    settings = parse(v3(recognition={"languages": ["ru-RU", "en-US"]})).recognition
    assert described(settings.settings("v3", 1)) == ("general", "ru-RU,en-US")
    assert described(settings.settings("v2", 1)) == ("general", "ru-RU")
