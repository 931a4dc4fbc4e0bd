"""Unit tests of the local SpeechKit server's pure decisions: no sockets, no threads, no clock."""

from __future__ import annotations

from typing import Any

import pytest

from speechkit_local import cli, faults, logic, recognition, service

ONE_SECOND = recognition.NANOSECONDS_PER_SECOND


# ---------------------------------------------------------------------------- formats


@pytest.mark.parametrize(
    ("nanoseconds", "expected"),
    [
        (0, "0s"),
        (2 * ONE_SECOND, "2s"),
        (1_200_000_000, "1.200s"),
        (500_000, "0.000500s"),
        (879_999_999, "0.879999999s"),
        (1, "0.000000001s"),
        (61 * ONE_SECOND + 50_000_000, "61.050s"),
        (-1_500_000_000, "-1.500s"),
    ],
)
def test_durations_are_written_like_protobuf_json(nanoseconds: int, expected: str) -> None:
    assert recognition.format_duration(nanoseconds) == expected


def test_timestamps_are_rfc3339_utc_whole_seconds() -> None:
    assert logic.format_timestamp(0) == "1970-01-01T00:00:00Z"
    assert logic.format_timestamp(1_700_000_000.75) == "2023-11-14T22:13:20Z"


def test_error_body_has_code_message_and_empty_details() -> None:
    assert logic.error_body(5, "Operation not found") == {
        "code": 5,
        "message": "Operation not found",
        "details": [],
    }


# ---------------------------------------------------------------------------- echo engine


@pytest.mark.parametrize(
    ("text", "sentences"),
    [
        ("Hello there. How are you? Fine!", ["Hello there.", "How are you?", "Fine!"]),
        ("Wait… what?", ["Wait…", "what?"]),
        ("«Да.» Нет.", ["«Да.»", "Нет."]),
        ('He said "stop." Then left', ['He said "stop."', "Then left"]),
        ("no end mark at all", ["no end mark at all"]),
        ("  spaced\n\tout.   text  ", ["spaced out.", "text"]),
        ("version 1.5 works", ["version 1.5 works"]),
        ("", []),
    ],
)
def test_sentences_end_at_end_marks(text: str, sentences: list[str]) -> None:
    assert logic.split_sentences(text) == sentences


def test_normalised_words_are_lower_case_without_edge_punctuation() -> None:
    assert logic.normalize_words("Hello, World!") == ["hello", "world"]
    assert logic.normalize_words("Кто-то — don't «знал».") == ["кто-то", "don't", "знал"]
    assert logic.normalize_words("... —") == []


def _texts(chunks: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(chunk["channelTag"], chunk["alternatives"][0]["text"]) for chunk in chunks]


def _words(chunk: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [
        (word["word"], word["startTime"], word["endTime"])
        for word in chunk["alternatives"][0]["words"]
    ]


def test_echo_keeps_the_text_as_written_with_literature_text_but_raw_words() -> None:
    chunks = logic.build_echo_chunks(["Hello, world. Bye!"], 3.0, literature_text=True)
    assert _texts(chunks) == [("1", "Hello, world."), ("1", "Bye!")]
    # The documented split: normalised chunk text, raw words (lower case, no punctuation).
    assert _words(chunks[0]) == [("hello", "0s", "1s"), ("world", "1s", "2s")]
    assert _words(chunks[1]) == [("bye", "2s", "3s")]
    assert chunks[0] == {
        "alternatives": [
            {
                "words": [
                    {"startTime": "0s", "endTime": "1s", "word": "hello", "confidence": 1},
                    {"startTime": "1s", "endTime": "2s", "word": "world", "confidence": 1},
                ],
                "text": "Hello, world.",
                "confidence": 1,
            }
        ],
        "channelTag": "1",
    }


def test_echo_normalises_without_literature_text() -> None:
    chunks = logic.build_echo_chunks(["Hello, World! — Bye."], 2.0, literature_text=False)
    assert _texts(chunks) == [("1", "hello world"), ("1", "bye")]
    # The dash was no word: three words share the two seconds.
    assert [word for chunk in chunks for word, _, _ in _words(chunk)] == ["hello", "world", "bye"]
    assert _words(chunks[1]) == [("bye", "1.333333333s", "2s")]


@pytest.mark.parametrize(
    "text", ["Hello, World! — Bye.", "«Кто-то» знал… Да?", "No end mark, at ALL"]
)
def test_echo_words_are_the_same_with_and_without_literature_text(text: str) -> None:
    literary = logic.build_echo_chunks([text], 2.5, literature_text=True)
    plain = logic.build_echo_chunks([text], 2.5, literature_text=False)
    assert [_words(chunk) for chunk in literary] == [_words(chunk) for chunk in plain]
    assert " ".join(chunk_text for _, chunk_text in _texts(literary)) == " ".join(text.split())
    assert [chunk_text for _, chunk_text in _texts(plain)] == [
        " ".join(word for word, _, _ in _words(chunk)) for chunk in plain
    ]


def test_echo_interleaves_channels_by_start_time() -> None:
    chunks = logic.build_echo_chunks(
        ["One. Two three four.", "Five six. Seven eight."], 4.0, literature_text=True
    )
    assert _texts(chunks) == [
        ("1", "One."),
        ("2", "Five six."),
        ("1", "Two three four."),
        ("2", "Seven eight."),
    ]
    starts = [chunk["alternatives"][0]["words"][0]["startTime"] for chunk in chunks]
    assert starts == ["0s", "0s", "1s", "2s"]


def test_echo_skips_silent_channels_and_silent_files() -> None:
    only_second = logic.build_echo_chunks([None, "Right only."], 1.0, literature_text=True)
    assert _texts(only_second) == [("2", "Right only.")]
    assert logic.build_echo_chunks([None], 1.0, literature_text=True) == []
    assert logic.build_echo_chunks(["", "?!"], 1.0, literature_text=False) == []


def test_response_without_chunks_has_no_chunks_key() -> None:
    assert logic.recognition_response([]) == {"@type": logic.RESPONSE_TYPE}
    chunk = {"alternatives": [], "channelTag": "1"}
    assert logic.recognition_response([chunk])["chunks"] == [chunk]


def test_transcripts_come_from_comments_per_channel() -> None:
    comments = {"TRANSCRIPT": "left", "TRANSCRIPT_CH2": "right", "ARTIST": "x"}
    assert logic.channel_transcripts(comments, 1) == ["left"]
    assert logic.channel_transcripts(comments, 2) == ["left", "right"]
    assert logic.channel_transcripts({"TRANSCRIPT_CH2": "right"}, 2) == [None, "right"]
    assert logic.channel_transcripts({}, 1) == [None]


# ---------------------------------------------------------------------------- operations


def test_completion_delay_scales_with_minutes_and_channels() -> None:
    def delay(duration: float, channels: int, base: float = 0.0) -> float:
        return logic.completion_delay_seconds(
            duration, channels, seconds_per_minute=10.0, base_delay_seconds=base
        )

    assert delay(60.0, 1) == pytest.approx(10.0)
    assert delay(60.0, 2) == pytest.approx(20.0)
    assert delay(30.0, 1, base=1.5) == pytest.approx(6.5)
    assert logic.completion_delay_seconds(
        600.0, 2, seconds_per_minute=0.0, base_delay_seconds=0.25
    ) == pytest.approx(0.25)


def test_operation_objects_have_the_service_field_order() -> None:
    pending = logic.operation_json(
        operation_id="e03abc", created_at=0.0, created_by="aje1", modified_at=5.0
    )
    assert pending == {
        "done": False,
        "id": "e03abc",
        "createdAt": "1970-01-01T00:00:00Z",
        "createdBy": "aje1",
        "modifiedAt": "1970-01-01T00:00:05Z",
    }
    assert list(pending) == ["done", "id", "createdAt", "createdBy", "modifiedAt"]
    done = logic.operation_json(
        operation_id="e03abc", created_at=0.0, created_by="aje1", modified_at=5.0, response={}
    )
    assert list(done) == ["done", "response", "id", "createdAt", "createdBy", "modifiedAt"]
    assert done["done"] is True
    failed = logic.operation_json(
        operation_id="e03abc",
        created_at=0.0,
        created_by="aje1",
        modified_at=5.0,
        error=logic.error_body(3, "Invalid audio received"),
    )
    assert failed["done"] is True
    assert "response" not in failed


def test_operation_ids_look_like_the_services() -> None:
    operation_id = logic.make_operation_id("0123456789abcdef0123")
    assert operation_id == "e030123456789abcdef0"
    assert len(operation_id) == 20
    with pytest.raises(ValueError, match="hex digits"):
        logic.make_operation_id("abc")


def test_results_are_forgotten_only_after_retention() -> None:
    assert not logic.is_forgotten(None, now=1e9, retention_seconds=0.0)
    assert not logic.is_forgotten(100.0, now=150.0, retention_seconds=60.0)
    assert logic.is_forgotten(100.0, now=161.0, retention_seconds=60.0)


# ---------------------------------------------------------------------------- request validation


def _parse(body: Any, folder_id: str | None = None) -> logic.RecognizeRequest:
    return logic.parse_recognize_request(body, folder_id=folder_id)


def _rejected(body: Any, folder_id: str | None = None) -> str:
    with pytest.raises(logic.RequestRejectedError) as caught:
        _parse(body, folder_id)
    assert caught.value.code == 3
    assert caught.value.http_status == 400
    return caught.value.message


URI = "https://storage.yandexcloud.net/bucket/key.ogg"


def test_minimal_request_gets_the_documented_defaults() -> None:
    request = _parse({"audio": {"uri": URI}})
    assert request == logic.RecognizeRequest(
        uri=URI,
        language_code="ru-RU",
        model="general",
        profanity_filter=False,
        literature_text=False,
        audio_encoding="OGG_OPUS",
    )


def test_json_names_and_proto_names_are_both_accepted() -> None:
    request = _parse(
        {
            "config": {
                "specification": {
                    "language_code": "en-US",
                    "literatureText": True,
                    "profanity_filter": True,
                    "raw_results": True,
                    "audio_encoding": 2,
                },
                "folder_id": "b1g",
            },
            "audio": {"uri": URI},
        },
        folder_id="b1g",
    )
    assert request.language_code == "en-US"
    assert request.literature_text is True
    assert request.profanity_filter is True
    assert request.raw_results is True
    assert request.audio_encoding == "OGG_OPUS"
    assert request.folder_id == "b1g"


def test_pcm_takes_rate_and_channel_count_as_numbers_or_strings() -> None:
    request = _parse(
        {
            "config": {
                "specification": {
                    "audioEncoding": "LINEAR16_PCM",
                    "sampleRateHertz": "48000",
                    "audioChannelCount": 2,
                }
            },
            "audio": {"uri": URI},
        }
    )
    assert (request.audio_encoding, request.sample_rate_hertz, request.audio_channel_count) == (
        "LINEAR16_PCM",
        48000,
        2,
    )


def test_null_means_not_set() -> None:
    request = _parse(
        {"config": {"specification": {"audioChannelCount": None}}, "audio": {"uri": URI}}
    )
    assert request.audio_channel_count is None


def test_language_codes_are_case_insensitive_and_pt_br_needs_general_rc() -> None:
    def language(specification: dict[str, Any]) -> str:
        body = {"config": {"specification": specification}, "audio": {"uri": URI}}
        return _parse(body).language_code

    assert language({"languageCode": "ru-ru"}) == "ru-RU"
    assert language({"languageCode": "EN-US"}) == "en-US"
    assert language({"languageCode": "pt-br", "model": "general:rc"}) == "pt-BR"


def test_unspecified_encoding_means_ogg_opus_and_forbids_channel_count() -> None:
    body = {
        "config": {
            "specification": {"audioEncoding": "AUDIO_ENCODING_UNSPECIFIED", "audioChannelCount": 1}
        },
        "audio": {"uri": URI},
    }
    assert "audioChannelCount must not be set for OGG_OPUS" in _rejected(body)


@pytest.mark.parametrize(
    ("specification", "named"),
    [
        ({"languageCode": "ru-RU", "language_code": "ru-RU"}, "set twice"),
        ({"profanityFilter": 1}, "config.specification.profanityFilter"),
        ({"rawResults": "true"}, "config.specification.rawResults"),
        ({"model": ["general"]}, "config.specification.model"),
        ({"sampleRateHertz": "fast"}, "config.specification.sampleRateHertz"),
        ({"sampleRateHertz": True}, "config.specification.sampleRateHertz"),
        ({"audioEncoding": 9}, "config.specification.audioEncoding"),
        ({"languageCode": "ru"}, "languageCode"),
        ({"model": "general:latest"}, "model"),
        ({"languageCode": "pt-BR"}, "does not support languageCode"),
        ({"languageCode": "pt-br", "model": "deferred-general"}, "does not support"),
        ({"audioEncoding": "LINEAR16_PCM", "sampleRateHertz": 44100}, "sampleRateHertz"),
        ({"audioEncoding": "LINEAR16_PCM", "audioChannelCount": 3}, "audioChannelCount"),
        ({"literature_text": True, "punctuation": True}, "config.specification.punctuation"),
    ],
)
def test_bad_specifications_are_refused_naming_the_field(
    specification: dict[str, Any], named: str
) -> None:
    message = _rejected({"config": {"specification": specification}, "audio": {"uri": URI}})
    assert named in message


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"config": {"specification": {}}}, "audio.uri"),
        ({"audio": {}}, "audio.uri"),
        ({"audio": {"content": "T2dnUw=="}}, "audio.content"),
        ({"audio": {"uri": "bucket/key.ogg"}}, "audio.uri"),
        ({"audio": {"uri": "ftp://host/key.ogg"}}, "audio.uri"),
        ({"audio": {"uri": URI, "url": URI}}, '"audio.url"'),
        ({"audio": URI}, '"audio"'),
        ({"config": [], "audio": {"uri": URI}}, '"config"'),
        ("text", "expected a JSON object"),
        (None, "expected a JSON object"),
    ],
)
def test_bad_bodies_are_refused_naming_the_field(body: Any, named: str) -> None:
    assert named in _rejected(body)


def test_folder_id_must_be_the_servers_folder() -> None:
    body = {"config": {"folderId": "b1gother"}, "audio": {"uri": URI}}
    assert "folderId" in _rejected(body, folder_id="b1gmine")
    assert "folderId" in _rejected(body, folder_id=None)
    assert _parse(body, folder_id="b1gother").folder_id == "b1gother"


# ---------------------------------------------------------------------------- authentication


def _auth(header: str | None, now: float = 100.0) -> logic.AuthOutcome:
    return logic.authenticate(
        header,
        api_keys=("key-1",),
        forbidden_api_keys=("key-no-role",),
        bearer_tokens={"static": None, "issued": 200.0},
        service_account_id="aje-sa",
        now=now,
    )


def test_accepted_credentials_act_as_the_service_account() -> None:
    assert _auth("Api-Key key-1") == logic.AuthOutcome("aje-sa", None)
    assert _auth("api-key key-1").principal == "aje-sa"  # auth schemes are case-insensitive
    assert _auth("Bearer static", now=1e12).principal == "aje-sa"
    assert _auth("Bearer issued", now=199.0).principal == "aje-sa"


@pytest.mark.parametrize(
    ("header", "now", "code"),
    [
        (None, 100.0, 16),
        ("", 100.0, 16),
        ("Api-Key", 100.0, 16),
        ("Api-Key key-2", 100.0, 16),
        ("Bearer key-1", 100.0, 16),
        ("Bearer issued", 200.0, 16),
        ("Bearer unknown", 100.0, 16),
        ("Token key-1", 100.0, 16),
        ("Api-Key key-no-role", 100.0, 7),
    ],
)
def test_refused_credentials(header: str | None, now: float, code: int) -> None:
    outcome = _auth(header, now)
    assert outcome.principal is None
    assert outcome.refusal is not None
    assert outcome.refusal.code == code


# ---------------------------------------------------------------------------- URIs


def test_logged_uris_lose_their_query() -> None:
    presigned = URI + "?X-Amz-Signature=abc&X-Amz-Credential=key"
    assert logic.strip_query(presigned) == URI


def test_object_key_is_the_decoded_path() -> None:
    assert logic.uri_object_key(URI + "?x=1") == "bucket/key.ogg"
    assert logic.uri_object_key("http://h/b/dir/%D0%B7%20a.ogg") == "b/dir/з a.ogg"


@pytest.mark.parametrize(
    ("uri", "endpoint", "location"),
    [
        (URI + "?sig=1", "https://storage.yandexcloud.net", ("bucket", "key.ogg")),
        (URI, "https://storage.yandexcloud.net:443/", ("bucket", "key.ogg")),
        ("http://127.0.0.1:8333/b/a/b.ogg", "http://127.0.0.1:8333", ("b", "a/b.ogg")),
        ("http://127.0.0.1:8334/b/a.ogg", "http://127.0.0.1:8333", None),
        ("http://other.example/b/a.ogg", "http://127.0.0.1:8333", None),
        ("http://127.0.0.1:8333/bucket-only", "http://127.0.0.1:8333", None),
        (URI, None, None),
    ],
)
def test_storage_location_only_for_the_configured_endpoint(
    uri: str, endpoint: str | None, location: tuple[str, str] | None
) -> None:
    assert logic.storage_object_location(uri, endpoint) == location


# ---------------------------------------------------------------------------- faults


def test_fault_settings_merge_and_validate() -> None:
    merged = faults.merge_fault_settings(
        faults.FaultSettings(),
        {"error_rate": 1, "error_status": 503, "error_endpoints": "submit", "auth_fail": True},
    )
    assert merged.error_rate == 1.0
    assert merged.error_status == 503
    assert merged.error_endpoints == ("submit",)
    assert merged.auth_fail is True
    both = faults.merge_fault_settings(merged, {"error_endpoints": ["operation", "submit"]})
    assert both.error_endpoints == ("submit", "operation")
    assert faults.merge_fault_settings(merged, {"error_endpoints": "both"}).error_endpoints == (
        "submit",
        "operation",
    )


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"eror_rate": 0.5}, "eror_rate"),
        ({"drop_rate": 1.5}, "drop_rate"),
        ({"slow_rate": "often"}, "slow_rate"),
        ({"error_status": 502}, "error_status"),
        ({"error_status": True}, "error_status"),
        ({"retry_after_seconds": 1.5}, "retry_after_seconds"),
        ({"slow_seconds": -1}, "slow_seconds"),
        ({"auth_fail": 1}, "auth_fail"),
        ({"drop_endpoints": "status"}, "drop_endpoints"),
    ],
)
def test_bad_fault_settings_are_refused(changes: dict[str, object], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        faults.merge_fault_settings(faults.FaultSettings(), changes)


def _draws(*values: float) -> tuple[list[float], Any]:
    remaining = list(values)
    used: list[float] = []

    def draw() -> float:
        value = remaining.pop(0)
        used.append(value)
        return value

    return used, draw


def test_faults_that_are_off_draw_nothing() -> None:
    used, draw = _draws()
    decision = faults.decide_faults(faults.FaultSettings(), "submit", draw)
    assert decision == faults.FaultDecision()
    assert used == []


def test_faults_out_of_scope_draw_nothing() -> None:
    settings = faults.FaultSettings(error_rate=1.0, error_endpoints=("operation",))
    used, draw = _draws()
    assert faults.decide_faults(settings, "submit", draw).error_status is None
    assert used == []
    used, draw = _draws(0.99)
    assert faults.decide_faults(settings, "operation", draw).error_status == 500


def test_each_fault_draws_once_in_a_fixed_order() -> None:
    settings = faults.FaultSettings(
        slow_rate=0.5,
        slow_seconds=2.0,
        drop_rate=0.5,
        rate_limit_rate=0.5,
        error_rate=0.5,
        error_status=504,
    )
    used, draw = _draws(0.1, 0.9, 0.4, 0.6)
    decision = faults.decide_faults(settings, "operation", draw)
    assert decision == faults.FaultDecision(
        slow_seconds=2.0, drop=False, rate_limited=True, error_status=None
    )
    assert used == [0.1, 0.9, 0.4, 0.6]


# ---------------------------------------------------------------------------- runtime config, CLI


def test_runtime_config_accepts_known_non_negative_numbers() -> None:
    timing = service._Timing(10.0, 0.0, 60.0)
    changed = service.merge_timing(timing, {"seconds_per_minute": 0, "retention_seconds": 5})
    assert changed == service._Timing(0.0, 0.0, 5.0)
    with pytest.raises(ValueError, match="seconds_per_minute"):
        service.merge_timing(timing, {"seconds_per_minute": -1})
    with pytest.raises(ValueError, match="speed"):
        service.merge_timing(timing, {"speed": 1})


S3_SECRET = "s3-secret-value"  # noqa: S105 - a test credential


def test_command_line_takes_secrets_from_the_environment_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(cli.ENV_API_KEYS, " key-a , key-b ,")
    monkeypatch.setenv(cli.ENV_S3_ACCESS_KEY_ID, "AKIDSECRET")
    monkeypatch.setenv(cli.ENV_S3_SECRET_ACCESS_KEY, S3_SECRET)
    arguments = cli.build_parser().parse_args(
        ["--error-rate", "0.25", "--fault-endpoints", "submit", "--drop-after-create"]
    )
    settings = cli.settings_from_arguments(arguments)
    assert settings.api_keys == ("key-a", "key-b")
    assert settings.storage_access_key_id == "AKIDSECRET"
    assert settings.storage_secret_access_key == S3_SECRET
    assert settings.faults.error_rate == 0.25
    assert settings.faults.error_endpoints == ("submit",)
    assert settings.faults.drop_after_create is True
    shown = repr(settings)
    assert "key-a" not in shown
    assert S3_SECRET not in shown


def test_command_line_refuses_rates_above_one() -> None:
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["--drop-rate", "2"])
