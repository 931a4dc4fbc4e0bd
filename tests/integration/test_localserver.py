"""Contract tests of the local SpeechKit-compatible server against a real SeaweedFS.

The daemon is developed against this server, so what it answers must have the shapes of the
real service (SPEECHKIT.md): paths, status codes with gRPC error bodies, operation objects,
echo-engine chunks. Audio is read from a real S3 server, by presigned link or with the
service's own storage credentials. Tests poll with short sleeps and assert outcomes, not time.
"""

from __future__ import annotations

import hashlib
import http.client
import itertools
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import requests

from daemon.audio import oggopus
from speechkit_local import LocalSpeechKit, ServerSettings, devstack
from speechkit_local.logic import RESPONSE_TYPE
from speechkit_local.recognition import NANOSECONDS_PER_SECOND, format_duration
from tests.fixtures_audio import fixture_path

if TYPE_CHECKING:
    pass

API_KEY = "AQVNlocal-test-key"
FORBIDDEN_KEY = "AQVNkey-without-the-role"
STATIC_TOKEN = "t1.static-iam-token"  # noqa: S105 - a test credential
FOLDER_ID = "b1gfolderlocal000001"
SEED = 20240601
POLL_SECONDS = 0.02  # short sleeps between status checks keep the suite fast
WAIT_LIMIT_SECONDS = 20.0  # a safety net against a broken server, never a timing assertion
PROJECT_ROOT = Path(__file__).resolve().parents[2]

MONO_SENTENCES = ["Hello from the watch folder.", "This is a test recording."]
LEFT_TEXT = "The left channel says good morning."
RIGHT_TEXT = "The right channel answers good evening."


# ---------------------------------------------------------------------------- server fixtures


@pytest.fixture(autouse=True)
def _no_leaked_server_threads() -> Iterator[None]:
    """Every test stops what it started: no connection, accept or worker thread survives."""
    yield
    leftover = [t.name for t in threading.enumerate() if t.name.startswith("localserver-")]
    assert leftover == []


StartServer = Callable[..., LocalSpeechKit]


@pytest.fixture
def start_server(seaweedfs: devstack.SeaweedFS) -> Iterator[StartServer]:
    """Start LocalSpeechKit servers (default: instant recognition, storage keys); stop them all."""
    started: list[LocalSpeechKit] = []

    def start(**overrides: Any) -> LocalSpeechKit:
        values: dict[str, Any] = {
            "api_keys": (API_KEY,),
            "forbidden_api_keys": (FORBIDDEN_KEY,),
            "bearer_tokens": (STATIC_TOKEN,),
            "folder_id": FOLDER_ID,
            "seconds_per_minute": 0.0,
            "storage_endpoint": seaweedfs.endpoint_url,
            "storage_access_key_id": seaweedfs.access_key_id,
            "storage_secret_access_key": seaweedfs.secret_access_key,
            "fetch_timeout_seconds": 5.0,
            "seed": SEED,
        }
        values.update(overrides)
        server = LocalSpeechKit(ServerSettings(**values))
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def speechkit(start_server: StartServer) -> LocalSpeechKit:
    return start_server()


@pytest.fixture
def api() -> Iterator[requests.Session]:
    """An HTTP client authenticated with the accepted API key (keep-alive connections)."""
    with requests.Session() as session:
        session.headers["Authorization"] = f"Api-Key {API_KEY}"
        yield session


# ---------------------------------------------------------------------------- helpers


def upload(storage: devstack.SeaweedFS, name: str) -> str:
    """Upload a committed fixture under a fresh key; returns the key."""
    key = f"{uuid.uuid4().hex[:12]}/{name}"
    storage.client().put_object(
        Bucket=storage.bucket, Key=key, Body=fixture_path(name).read_bytes()
    )
    return key


def plain_uri(storage: devstack.SeaweedFS, key: str) -> str:
    return f"{storage.endpoint_url}/{storage.bucket}/{key}"


def presigned_uri(storage: devstack.SeaweedFS, key: str) -> str:
    return storage.client().generate_presigned_url(
        "get_object", Params={"Bucket": storage.bucket, "Key": key}, ExpiresIn=3600
    )


def recognize_body(uri: str, **specification: Any) -> dict[str, Any]:
    return {
        "config": {"specification": {"languageCode": "en-US", **specification}},
        "audio": {"uri": uri},
    }


def submit(
    session: requests.Session, server: LocalSpeechKit, uri: str, **specification: Any
) -> dict[str, Any]:
    """Submit and return the operation; fails the test unless the answer is 200."""
    answer = session.post(
        server.recognize_url, json=recognize_body(uri, **specification), timeout=10
    )
    assert answer.status_code == 200, answer.text
    operation: dict[str, Any] = answer.json()
    return operation


def wait_done(
    session: requests.Session, server: LocalSpeechKit, operation_id: str
) -> dict[str, Any]:
    """Poll GET /operations/{id} until done."""
    deadline = time.monotonic() + WAIT_LIMIT_SECONDS
    while time.monotonic() < deadline:
        answer = session.get(f"{server.operations_url}/{operation_id}", timeout=10)
        assert answer.status_code == 200, answer.text
        operation: dict[str, Any] = answer.json()
        if operation["done"]:
            return operation
        time.sleep(POLL_SECONDS)
    pytest.fail(f"operation {operation_id} never finished")


def recognize(
    session: requests.Session, server: LocalSpeechKit, uri: str, **specification: Any
) -> dict[str, Any]:
    return wait_done(session, server, submit(session, server, uri, **specification)["id"])


def chunk_texts(operation: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (chunk["channelTag"], chunk["alternatives"][0]["text"])
        for chunk in operation["response"]["chunks"]
    ]


def seconds(duration: str) -> float:
    assert duration.endswith("s")
    return float(duration[:-1])


def audio_duration(name: str) -> str:
    info = oggopus.inspect_file(fixture_path(name))
    return format_duration(round(info.duration_seconds * NANOSECONDS_PER_SECOND))


# ---------------------------------------------------------------------------- authentication


@pytest.mark.parametrize(
    "authorization",
    [None, "Api-Key wrong-key", f"Bearer {API_KEY}", API_KEY, "Api-Key", "Basic dXNlcjpwYXNz"],
)
def test_submit_without_valid_credentials_is_401_and_creates_nothing(
    speechkit: LocalSpeechKit, seaweedfs: devstack.SeaweedFS, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    answer = requests.post(
        speechkit.recognize_url,
        json=recognize_body(plain_uri(seaweedfs, "any/key.ogg")),
        headers=headers,
        timeout=10,
    )
    assert answer.status_code == 401
    assert answer.json() == {"code": 16, "message": "Unauthenticated", "details": []}
    assert speechkit.stats()["submissions"] == 0


def test_operations_need_credentials_too(
    speechkit: LocalSpeechKit, api: requests.Session, seaweedfs: devstack.SeaweedFS
) -> None:
    operation = submit(api, speechkit, plain_uri(seaweedfs, upload(seaweedfs, "mono.ogg")))
    answer = requests.get(f"{speechkit.operations_url}/{operation['id']}", timeout=10)
    assert answer.status_code == 401
    assert answer.json()["code"] == 16


def test_key_without_the_role_is_403_permission_denied(
    speechkit: LocalSpeechKit, seaweedfs: devstack.SeaweedFS
) -> None:
    answer = requests.post(
        speechkit.recognize_url,
        json=recognize_body(plain_uri(seaweedfs, "any/key.ogg")),
        headers={"Authorization": f"Api-Key {FORBIDDEN_KEY}"},
        timeout=10,
    )
    assert answer.status_code == 403
    assert answer.json() == {"code": 7, "message": "Permission denied", "details": []}


def test_bearer_tokens_static_and_issued_are_accepted_until_expiry(
    speechkit: LocalSpeechKit, seaweedfs: devstack.SeaweedFS
) -> None:
    speechkit.accept_bearer_token("t1.fresh", expires_at=time.time() + 3600)
    speechkit.accept_bearer_token("t1.stale", expires_at=time.time() - 1)
    body = recognize_body(plain_uri(seaweedfs, upload(seaweedfs, "mono.ogg")))

    def status(token: str) -> int:
        headers = {"Authorization": f"Bearer {token}"}
        return requests.post(
            speechkit.recognize_url, json=body, headers=headers, timeout=10
        ).status_code

    assert status(STATIC_TOKEN) == 200
    assert status("t1.fresh") == 200
    assert status("t1.stale") == 401
    assert speechkit.stats()["submissions"] == 2


def test_every_answer_carries_a_request_id(
    speechkit: LocalSpeechKit, api: requests.Session
) -> None:
    first = api.get(f"{speechkit.operations_url}/e03unknown", timeout=10)
    second = api.get(f"{speechkit.operations_url}/e03unknown", timeout=10)
    assert first.headers["x-request-id"]
    assert first.headers["x-request-id"] != second.headers["x-request-id"]


def test_keep_alive_serves_several_requests_on_one_connection(speechkit: LocalSpeechKit) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", speechkit.port, timeout=10)
    try:
        for _ in range(3):
            connection.request(
                "GET", "/operations/e03unknown", headers={"Authorization": f"Api-Key {API_KEY}"}
            )
            answer = connection.getresponse()
            body = answer.read()
            assert answer.status == 404
            assert int(answer.headers["Content-Length"]) == len(body)
            assert json.loads(body)["code"] == 5
    finally:
        connection.close()
    assert speechkit.stats()["operation_requests"] == 3


# ---------------------------------------------------------------------------- request validation


@pytest.mark.parametrize(
    ("body", "message_part"),
    [
        (
            {"config": {"specification": {"audioChannelCount": 1}}, "audio": {"uri": "URI"}},
            "audioChannelCount must not be set for OGG_OPUS",
        ),
        (
            {
                "config": {"specification": {"audioEncoding": "OGG_OPUS", "audioChannelCount": 2}},
                "audio": {"uri": "URI"},
            },
            "audioChannelCount must not be set for OGG_OPUS",
        ),
        (
            {"config": {"specification": {"sampleRate": 48000}}, "audio": {"uri": "URI"}},
            '"config.specification.sampleRate"',
        ),
        ({"config": {"spec": {}}, "audio": {"uri": "URI"}}, '"config.spec"'),
        ({"audio": {"uri": "URI"}, "priority": 1}, '"priority"'),
        (
            {"config": {"specification": {"profanityFilter": "yes"}}, "audio": {"uri": "URI"}},
            "config.specification.profanityFilter",
        ),
        (
            {"config": {"specification": {"literature_text": 1}}, "audio": {"uri": "URI"}},
            "config.specification.literature_text",
        ),
        (
            {"config": {"specification": {"languageCode": "english"}}, "audio": {"uri": "URI"}},
            "languageCode",
        ),
        (
            {"config": {"specification": {"languageCode": 7}}, "audio": {"uri": "URI"}},
            "config.specification.languageCode",
        ),
        ({"config": {"specification": {"model": "best"}}, "audio": {"uri": "URI"}}, "model"),
        (
            {"config": {"specification": {"audioEncoding": "FLAC"}}, "audio": {"uri": "URI"}},
            "config.specification.audioEncoding",
        ),
        ({"config": {"specification": {}}}, "audio.uri"),
        ({"config": {}, "audio": {}}, "audio.uri"),
        ({"audio": {"uri": "s3://bucket/key.ogg"}}, "audio.uri"),
        ({"audio": {"uri": 5}}, "audio.uri"),
        ({"config": {"folderId": "b1gsomeoneelse"}, "audio": {"uri": "URI"}}, "folderId"),
        (["not", "an", "object"], "expected a JSON object"),
    ],
)
def test_invalid_request_is_400_invalid_argument_and_creates_nothing(
    speechkit: LocalSpeechKit,
    api: requests.Session,
    seaweedfs: devstack.SeaweedFS,
    body: Any,
    message_part: str,
) -> None:
    uri = plain_uri(seaweedfs, "some/key.ogg")
    text = json.dumps(body).replace('"URI"', json.dumps(uri))
    answer = api.post(
        speechkit.recognize_url,
        data=text.encode(),
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert answer.status_code == 400, answer.text
    error = answer.json()
    assert error["code"] == 3
    assert message_part in error["message"]
    assert error["details"] == []
    assert speechkit.stats()["submissions"] == 0


def test_body_that_is_not_json_is_400(speechkit: LocalSpeechKit, api: requests.Session) -> None:
    answer = api.post(speechkit.recognize_url, data=b"{config:", timeout=10)
    assert answer.status_code == 400
    assert answer.json()["code"] == 3
    assert "Invalid JSON" in answer.json()["message"]


def test_every_documented_field_is_accepted_in_both_spellings(
    speechkit: LocalSpeechKit, api: requests.Session, seaweedfs: devstack.SeaweedFS
) -> None:
    uri = plain_uri(seaweedfs, upload(seaweedfs, "mono.ogg"))
    bodies = [
        {
            "config": {
                "specification": {
                    "languageCode": "ru-RU",
                    "model": "deferred-general",
                    "profanityFilter": True,
                    "literature_text": True,
                    "audioEncoding": "OGG_OPUS",
                    "rawResults": True,
                },
                "folderId": FOLDER_ID,
            },
            "audio": {"uri": uri},
        },
        {
            "config": {"specification": {"language_code": "auto", "literatureText": False}},
            "audio": {"uri": uri},
        },
        {"audio": {"uri": uri}},  # every specification field has a default
    ]
    for body in bodies:
        answer = api.post(speechkit.recognize_url, json=body, timeout=10)
        assert answer.status_code == 200, (body, answer.text)
    assert speechkit.stats()["submissions"] == len(bodies)


# ---------------------------------------------------------------------------- echo engine results


def test_submit_answers_a_pending_operation_shaped_like_the_service(
    start_server: StartServer, api: requests.Session, seaweedfs: devstack.SeaweedFS
) -> None:
    server = start_server(seconds_per_minute=600.0)  # about 40 s for mono.ogg
    uri = plain_uri(seaweedfs, upload(seaweedfs, "mono.ogg"))
    operation = submit(api, server, uri)
    assert list(operation) == ["done", "id", "createdAt", "createdBy", "modifiedAt"]
    assert operation["done"] is False
    assert operation["id"].startswith("e03")
    assert len(operation["id"]) == 20
    assert operation["createdAt"].endswith("Z")
    assert operation["createdBy"].startswith("aje")

    polled = api.get(f"{server.operations_url}/{operation['id']}", timeout=10).json()
    assert polled["done"] is False
    assert "response" not in polled
    assert "error" not in polled
    assert polled["id"] == operation["id"]
    assert polled["createdAt"] == operation["createdAt"]


def test_mono_file_echoes_its_transcript_sentence_by_sentence(
    speechkit: LocalSpeechKit, api: requests.Session, seaweedfs: devstack.SeaweedFS
) -> None:
    uri = plain_uri(seaweedfs, upload(seaweedfs, "mono.ogg"))
    operation = recognize(api, speechkit, uri, literature_text=True)

    assert list(operation) == ["done", "response", "id", "createdAt", "createdBy", "modifiedAt"]
    assert operation["response"]["@type"] == RESPONSE_TYPE
    assert chunk_texts(operation) == [("1", MONO_SENTENCES[0]), ("1", MONO_SENTENCES[1])]
    chunks = operation["response"]["chunks"]
    assert all(set(chunk) == {"alternatives", "channelTag"} for chunk in chunks)
    alternatives = [chunk["alternatives"][0] for chunk in chunks]
    assert all(set(alt) == {"words", "text", "confidence"} for alt in alternatives)
    assert all(alt["confidence"] == 1 for alt in alternatives)

    words = [word for alt in alternatives for word in alt["words"]]
    # The documented split: the text is normalised (literature_text), the words stay raw.
    assert [word["word"] for word in words] == [
        "hello", "from", "the", "watch", "folder", "this", "is", "a", "test", "recording",
    ]  # fmt: skip
    assert all(list(word) == ["startTime", "endTime", "word", "confidence"] for word in words)
    # The words share the whole audio evenly: contiguous from 0 to the file's duration.
    assert words[0]["startTime"] == "0s"
    assert words[-1]["endTime"] == audio_duration("mono.ogg")
    for before, after in itertools.pairwise(words):
        assert before["endTime"] == after["startTime"]
        assert seconds(before["startTime"]) < seconds(before["endTime"])


def test_without_literature_text_the_text_is_normalised(
    speechkit: LocalSpeechKit, api: requests.Session, seaweedfs: devstack.SeaweedFS
) -> None:
    mono = recognize(api, speechkit, plain_uri(seaweedfs, upload(seaweedfs, "mono.ogg")))
    assert chunk_texts(mono) == [
        ("1", "hello from the watch folder"),
        ("1", "this is a test recording"),
    ]
    russian = recognize(
        api,
        speechkit,
        plain_uri(seaweedfs, upload(seaweedfs, "unicode.ogg")),
        languageCode="ru-RU",
        literature_text=False,
    )
    assert chunk_texts(russian) == [("1", "привет это проверка")]


def test_words_are_raw_whether_or_not_literature_text_is_set(
    speechkit: LocalSpeechKit, api: requests.Session, seaweedfs: devstack.SeaweedFS
) -> None:
    def words(operation: dict[str, Any]) -> list[dict[str, Any]]:
        chunks = operation["response"]["chunks"]
        return [word for chunk in chunks for word in chunk["alternatives"][0]["words"]]

    uri = plain_uri(seaweedfs, upload(seaweedfs, "unicode.ogg"))
    literary = recognize(api, speechkit, uri, languageCode="ru-RU", literature_text=True)
    plain = recognize(api, speechkit, uri, languageCode="ru-RU", literature_text=False)
    assert [text for _, text in chunk_texts(literary)] != [text for _, text in chunk_texts(plain)]
    assert words(literary) == words(plain)
    assert [word["word"] for word in words(literary)] == ["привет", "это", "проверка"]


def test_stereo_file_gives_one_channel_tag_per_channel_in_time_order(
    speechkit: LocalSpeechKit, api: requests.Session, seaweedfs: devstack.SeaweedFS
) -> None:
    uri = plain_uri(seaweedfs, upload(seaweedfs, "stereo.ogg"))
    operation = recognize(api, speechkit, uri, literature_text=True)
    assert sorted(chunk_texts(operation)) == [("1", LEFT_TEXT), ("2", RIGHT_TEXT)]
    starts = [
        seconds(chunk["alternatives"][0]["words"][0]["startTime"])
        for chunk in operation["response"]["chunks"]
    ]
    assert starts == sorted(starts)
    for chunk in operation["response"]["chunks"]:
        assert chunk["alternatives"][0]["words"][-1]["endTime"] == audio_duration("stereo.ogg")


def test_file_without_transcript_comments_is_done_without_chunks(
    speechkit: LocalSpeechKit, api: requests.Session, seaweedfs: devstack.SeaweedFS
) -> None:
    operation = recognize(api, speechkit, plain_uri(seaweedfs, upload(seaweedfs, "silence.ogg")))
    assert operation["done"] is True
    assert operation["response"] == {"@type": RESPONSE_TYPE}


def test_non_opus_audio_ends_with_invalid_audio_error(
    speechkit: LocalSpeechKit, api: requests.Session, seaweedfs: devstack.SeaweedFS
) -> None:
    operation = recognize(api, speechkit, plain_uri(seaweedfs, upload(seaweedfs, "vorbis.ogg")))
    assert list(operation) == ["done", "error", "id", "createdAt", "createdBy", "modifiedAt"]
    assert operation["error"] == {"code": 3, "message": "Invalid audio received", "details": []}


# ---------------------------------------------------------------------------- reading the audio


def test_presigned_link_is_read_without_server_side_credentials(
    start_server: StartServer, api: requests.Session, seaweedfs: devstack.SeaweedFS
) -> None:
    server = start_server(storage_access_key_id=None, storage_secret_access_key=None)
    uri = presigned_uri(seaweedfs, upload(seaweedfs, "mono.ogg"))
    operation = recognize(api, server, uri, literature_text=True)
    assert [text for _, text in chunk_texts(operation)] == MONO_SENTENCES


def test_plain_link_is_read_with_the_service_accounts_own_rights(
    speechkit: LocalSpeechKit, api: requests.Session, seaweedfs: devstack.SeaweedFS
) -> None:
    operation = recognize(
        api, speechkit, plain_uri(seaweedfs, upload(seaweedfs, "mono.ogg")), literature_text=True
    )
    assert [text for _, text in chunk_texts(operation)] == MONO_SENTENCES


def test_query_string_is_ignored_when_the_service_has_rights(
    speechkit: LocalSpeechKit, api: requests.Session, seaweedfs: devstack.SeaweedFS
) -> None:
    # A presigned link whose signature no longer matches still works: the service reads the
    # object with its own rights, as the documentation says.
    uri = presigned_uri(seaweedfs, upload(seaweedfs, "mono.ogg")) + "0"
    operation = recognize(api, speechkit, uri, literature_text=True)
    assert [text for _, text in chunk_texts(operation)] == MONO_SENTENCES


def test_plain_link_without_rights_ends_with_permission_denied(
    start_server: StartServer, api: requests.Session, seaweedfs: devstack.SeaweedFS
) -> None:
    server = start_server(storage_access_key_id=None, storage_secret_access_key=None)
    operation = recognize(api, server, plain_uri(seaweedfs, upload(seaweedfs, "mono.ogg")))
    assert operation["error"] == {
        "code": 7,
        "message": "Cannot read audio: access denied",
        "details": [],
    }


def test_wrong_service_storage_key_ends_with_permission_denied(
    start_server: StartServer, api: requests.Session, seaweedfs: devstack.SeaweedFS
) -> None:
    server = start_server(storage_secret_access_key="not-the-secret")  # noqa: S106
    operation = recognize(api, server, plain_uri(seaweedfs, upload(seaweedfs, "mono.ogg")))
    assert operation["error"]["code"] == 7


@pytest.mark.parametrize("link", ["plain", "presigned"])
def test_missing_object_ends_with_not_found(
    speechkit: LocalSpeechKit, api: requests.Session, seaweedfs: devstack.SeaweedFS, link: str
) -> None:
    key = f"{uuid.uuid4().hex}/never-uploaded.ogg"
    uri = plain_uri(seaweedfs, key) if link == "plain" else presigned_uri(seaweedfs, key)
    operation = recognize(api, speechkit, uri)
    assert operation["error"] == {
        "code": 5,
        "message": "Cannot read audio: object not found",
        "details": [],
    }


def test_unreachable_storage_ends_with_internal_error(
    speechkit: LocalSpeechKit, api: requests.Session
) -> None:
    with socket.socket() as placeholder:  # a port nobody listens on
        placeholder.bind(("127.0.0.1", 0))
        closed_port = placeholder.getsockname()[1]
    operation = recognize(api, speechkit, f"http://127.0.0.1:{closed_port}/bucket/key.ogg")
    assert operation["error"]["code"] == 13


# ---------------------------------------------------------------------------- operations lifecycle


def test_unknown_operation_is_404_not_found(
    speechkit: LocalSpeechKit, api: requests.Session
) -> None:
    answer = api.get(f"{speechkit.operations_url}/e03doesnotexist00000", timeout=10)
    assert answer.status_code == 404
    assert answer.json() == {"code": 5, "message": "Operation not found", "details": []}


def test_expired_operation_is_forgotten(
    speechkit: LocalSpeechKit, api: requests.Session, seaweedfs: devstack.SeaweedFS
) -> None:
    operation = recognize(api, speechkit, plain_uri(seaweedfs, upload(seaweedfs, "mono.ogg")))
    expired = requests.post(f"{speechkit.control_url}/expire/{operation['id']}", timeout=10)
    assert expired.status_code == 200
    answer = api.get(f"{speechkit.operations_url}/{operation['id']}", timeout=10)
    assert answer.status_code == 404
    assert answer.json()["code"] == 5
    assert speechkit.stats()["operations"]["forgotten"] == 1


def test_results_are_forgotten_after_the_retention_time_but_pending_ones_are_not(
    start_server: StartServer, api: requests.Session, seaweedfs: devstack.SeaweedFS
) -> None:
    server = start_server()
    finished = recognize(api, server, plain_uri(seaweedfs, upload(seaweedfs, "mono.ogg")))
    server.set_config(seconds_per_minute=6000.0)
    pending = submit(api, server, plain_uri(seaweedfs, upload(seaweedfs, "mono.ogg")))
    server.set_config(retention_seconds=0.0)

    answer = api.get(f"{server.operations_url}/{finished['id']}", timeout=10)
    assert answer.status_code == 404
    still_pending = api.get(f"{server.operations_url}/{pending['id']}", timeout=10)
    assert still_pending.status_code == 200
    assert still_pending.json()["done"] is False


# ---------------------------------------------------------------------------- fault injection


@pytest.mark.parametrize(("status", "code"), [(500, 13), (503, 14), (504, 4)])
def test_injected_server_errors_are_not_billed(
    speechkit: LocalSpeechKit,
    api: requests.Session,
    seaweedfs: devstack.SeaweedFS,
    status: int,
    code: int,
) -> None:
    speechkit.set_faults(error_rate=1.0, error_status=status)
    body = recognize_body(plain_uri(seaweedfs, upload(seaweedfs, "mono.ogg")))
    answer = api.post(speechkit.recognize_url, json=body, timeout=10)
    assert answer.status_code == status
    assert answer.json()["code"] == code
    stats = speechkit.stats()
    assert stats["submissions"] == 0
    assert stats["submit_requests"] == 1
    assert stats["faults_injected"]["submit"]["error"] == 1


def test_faults_can_target_status_checks_only(
    speechkit: LocalSpeechKit, api: requests.Session, seaweedfs: devstack.SeaweedFS
) -> None:
    speechkit.set_faults(error_rate=1.0, error_status=503, error_endpoints="operation")
    operation = submit(api, speechkit, plain_uri(seaweedfs, upload(seaweedfs, "mono.ogg")))
    answer = api.get(f"{speechkit.operations_url}/{operation['id']}", timeout=10)
    assert answer.status_code == 503
    speechkit.set_faults(error_rate=0.0)
    assert wait_done(api, speechkit, operation["id"])["done"] is True


def test_rate_limit_is_429_with_retry_after(
    speechkit: LocalSpeechKit, api: requests.Session, seaweedfs: devstack.SeaweedFS
) -> None:
    speechkit.set_faults(rate_limit_rate=1.0, retry_after_seconds=7)
    body = recognize_body(plain_uri(seaweedfs, upload(seaweedfs, "mono.ogg")))
    answer = api.post(speechkit.recognize_url, json=body, timeout=10)
    assert answer.status_code == 429
    assert answer.headers["Retry-After"] == "7"
    assert answer.json()["code"] == 8
    assert api.get(f"{speechkit.operations_url}/e03any", timeout=10).status_code == 429
    assert speechkit.stats()["submissions"] == 0


def test_drop_before_create_loses_the_request_and_bills_nothing(
    speechkit: LocalSpeechKit, api: requests.Session, seaweedfs: devstack.SeaweedFS
) -> None:
    speechkit.set_faults(drop_rate=1.0, drop_endpoints="submit")
    body = recognize_body(plain_uri(seaweedfs, upload(seaweedfs, "mono.ogg")))
    with pytest.raises(requests.ConnectionError):
        api.post(speechkit.recognize_url, json=body, timeout=10)
    stats = speechkit.stats()
    assert stats["submissions"] == 0
    assert stats["faults_injected"]["submit"]["drop"] == 1
    speechkit.set_faults(drop_rate=0.0)
    assert api.post(speechkit.recognize_url, json=body, timeout=10).status_code == 200


def test_drop_after_create_loses_the_answer_but_the_operation_runs(
    speechkit: LocalSpeechKit, api: requests.Session, seaweedfs: devstack.SeaweedFS
) -> None:
    key = upload(seaweedfs, "mono.ogg")
    speechkit.set_faults(drop_rate=1.0, drop_after_create=True)
    with pytest.raises(requests.ConnectionError):
        api.post(
            speechkit.recognize_url, json=recognize_body(plain_uri(seaweedfs, key)), timeout=10
        )
    stats = speechkit.stats()
    assert stats["submissions"] == 1
    assert stats["submissions_by_uri_key"] == {f"{seaweedfs.bucket}/{key}": 1}
    assert stats["faults_injected"]["submit"]["drop_after_create"] == 1
    deadline = time.monotonic() + WAIT_LIMIT_SECONDS
    while speechkit.stats()["operations"]["done"] != 1 and time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)
    assert speechkit.stats()["operations"]["done"] == 1


def test_drop_on_status_check_closes_the_connection(
    speechkit: LocalSpeechKit, api: requests.Session
) -> None:
    speechkit.set_faults(drop_rate=1.0, drop_endpoints=["operation"])
    with pytest.raises(requests.ConnectionError):
        api.get(f"{speechkit.operations_url}/e03any", timeout=10)
    assert speechkit.stats()["faults_injected"]["operation"]["drop"] == 1


def test_slow_answers_still_arrive(
    speechkit: LocalSpeechKit, api: requests.Session, seaweedfs: devstack.SeaweedFS
) -> None:
    speechkit.set_faults(slow_rate=1.0, slow_seconds=0.2)
    operation = recognize(api, speechkit, plain_uri(seaweedfs, upload(seaweedfs, "mono.ogg")))
    assert operation["done"] is True
    injected = speechkit.stats()["faults_injected"]
    assert injected["submit"]["slow"] == 1
    assert injected["operation"]["slow"] >= 1


def test_operation_error_fault_fails_good_audio(
    speechkit: LocalSpeechKit, api: requests.Session, seaweedfs: devstack.SeaweedFS
) -> None:
    speechkit.set_faults(operation_error_rate=1.0)
    operation = recognize(api, speechkit, plain_uri(seaweedfs, upload(seaweedfs, "mono.ogg")))
    assert operation["error"] == {"code": 3, "message": "Invalid audio received", "details": []}


def test_auth_fail_simulates_a_revoked_key_until_restored(
    speechkit: LocalSpeechKit, api: requests.Session, seaweedfs: devstack.SeaweedFS
) -> None:
    body = recognize_body(plain_uri(seaweedfs, upload(seaweedfs, "mono.ogg")))
    speechkit.set_faults(auth_fail=True)
    refused = api.post(speechkit.recognize_url, json=body, timeout=10)
    assert refused.status_code == 401
    assert refused.json()["code"] == 16
    speechkit.set_faults(auth_fail=False)
    assert api.post(speechkit.recognize_url, json=body, timeout=10).status_code == 200


def test_seeded_faults_repeat_exactly(start_server: StartServer, api: requests.Session) -> None:
    def statuses(server: LocalSpeechKit) -> list[int]:
        server.set_faults(error_rate=0.5, error_status=503)
        return [
            api.get(f"{server.operations_url}/e03any", timeout=10).status_code for _ in range(24)
        ]

    first = statuses(start_server(seed=99))
    second = statuses(start_server(seed=99))
    assert first == second
    assert set(first) == {404, 503}


# ---------------------------------------------------------------------------- control API and stats


def test_stats_count_submissions_by_content_and_by_object(
    speechkit: LocalSpeechKit, api: requests.Session, seaweedfs: devstack.SeaweedFS
) -> None:
    keys = [upload(seaweedfs, "mono.ogg"), upload(seaweedfs, "mono.ogg")]
    keys.append(upload(seaweedfs, "stereo.ogg"))
    for key in keys:
        recognize(api, speechkit, plain_uri(seaweedfs, key))
    recognize(api, speechkit, presigned_uri(seaweedfs, keys[0]))

    stats = requests.get(f"{speechkit.control_url}/stats", timeout=10).json()
    mono_sha = hashlib.sha256(fixture_path("mono.ogg").read_bytes()).hexdigest()
    stereo_sha = hashlib.sha256(fixture_path("stereo.ogg").read_bytes()).hexdigest()
    assert stats["submissions"] == 4
    assert stats["submissions_by_sha256"] == {mono_sha: 3, stereo_sha: 1}
    assert stats["submissions_by_uri_key"] == {
        f"{seaweedfs.bucket}/{keys[0]}": 2,
        f"{seaweedfs.bucket}/{keys[1]}": 1,
        f"{seaweedfs.bucket}/{keys[2]}": 1,
    }
    assert stats["operations"] == {"pending": 0, "done": 4, "error": 0, "forgotten": 0}
    assert stats["operation_requests"] >= 4


def test_control_api_sets_faults_config_and_resets(
    speechkit: LocalSpeechKit, api: requests.Session, seaweedfs: devstack.SeaweedFS
) -> None:
    control = speechkit.control_url
    faults = requests.post(
        f"{control}/faults", json={"rate_limit_rate": 1.0, "retry_after_seconds": 3}, timeout=10
    )
    assert faults.status_code == 200
    assert faults.json()["rate_limit_rate"] == 1.0
    body = recognize_body(plain_uri(seaweedfs, upload(seaweedfs, "mono.ogg")))
    assert api.post(speechkit.recognize_url, json=body, timeout=10).status_code == 429

    assert requests.post(f"{control}/reset", timeout=10).status_code == 200
    assert api.post(speechkit.recognize_url, json=body, timeout=10).status_code == 200
    stats = requests.get(f"{control}/stats", timeout=10).json()
    assert stats["submit_requests"] == 1
    assert stats["faults"]["rate_limit_rate"] == 0.0

    config = requests.post(f"{control}/config", json={"base_delay_seconds": 2.5}, timeout=10)
    assert config.json()["base_delay_seconds"] == 2.5

    bad = requests.post(f"{control}/faults", json={"eror_rate": 1.0}, timeout=10)
    assert bad.status_code == 400
    assert "eror_rate" in bad.json()["message"]
    bad_rate = requests.post(f"{control}/faults", json={"drop_rate": 2}, timeout=10)
    assert bad_rate.status_code == 400
    unknown = requests.post(f"{control}/expire/e03unknown", timeout=10)
    assert unknown.status_code == 404


def test_logs_hold_neither_keys_nor_presigned_queries(
    speechkit: LocalSpeechKit,
    api: requests.Session,
    seaweedfs: devstack.SeaweedFS,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="speechkit_local")
    uri = presigned_uri(seaweedfs, upload(seaweedfs, "mono.ogg"))
    operation = submit(api, speechkit, uri)
    api.headers["x-client-request-id"] = "client-42"
    wait_done(api, speechkit, operation["id"])
    text = "\n".join(record.getMessage() for record in caplog.records)
    assert "x-client-request-id=client-42" in text
    assert "x-request-id=" in text
    assert API_KEY not in text
    assert "X-Amz-Signature" not in text
    assert seaweedfs.secret_access_key not in text


def test_stop_closes_idle_keep_alive_connections(seaweedfs: devstack.SeaweedFS) -> None:
    server = LocalSpeechKit(ServerSettings(api_keys=(API_KEY,)))
    with requests.Session() as session:
        server.start()
        session.get(
            f"{server.operations_url}/e03any",
            headers={"Authorization": f"Api-Key {API_KEY}"},
            timeout=10,
        )
        server.stop()  # the session still holds its connection open
        leftover = [t.name for t in threading.enumerate() if t.name.startswith("localserver-")]
        assert leftover == []


def test_server_refuses_to_listen_beyond_loopback() -> None:
    with pytest.raises(ValueError, match="loopback"):
        LocalSpeechKit(ServerSettings(host="0.0.0.0"))  # noqa: S104 - the refused case


# ---------------------------------------------------------------------------- command line


def test_command_line_serves_until_sigterm(seaweedfs: devstack.SeaweedFS, tmp_path: Path) -> None:
    environment = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
    environment["SPEECHKIT_LOCAL_API_KEYS"] = f"other-key,{API_KEY}"
    environment["SPEECHKIT_LOCAL_S3_ACCESS_KEY_ID"] = seaweedfs.access_key_id
    environment["SPEECHKIT_LOCAL_S3_SECRET_ACCESS_KEY"] = seaweedfs.secret_access_key
    port_file = tmp_path / "port"
    stderr_path = tmp_path / "stderr.log"
    command = [
        sys.executable,
        "-m",
        "speechkit_local",
        "--port-file",
        str(port_file),
        "--seconds-per-minute",
        "0",
        "--storage-endpoint",
        seaweedfs.endpoint_url,
    ]
    with stderr_path.open("wb") as stderr_file:
        process = subprocess.Popen(
            command, cwd=PROJECT_ROOT, env=environment, stdout=subprocess.PIPE, stderr=stderr_file
        )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().decode()
        assert line.startswith("listening on http://127.0.0.1:"), line
        base_url = line.split()[-1]
        assert port_file.read_text().strip() == base_url.rsplit(":", 1)[1]

        with requests.Session() as session:
            session.headers["Authorization"] = f"Api-Key {API_KEY}"
            uri = plain_uri(seaweedfs, upload(seaweedfs, "mono.ogg"))
            answer = session.post(
                base_url + "/speech/stt/v2/longRunningRecognize",
                json=recognize_body(uri, literature_text=True),
                timeout=10,
            )
            assert answer.status_code == 200
            operation_url = f"{base_url}/operations/{answer.json()['id']}"
            deadline = time.monotonic() + WAIT_LIMIT_SECONDS
            operation = session.get(operation_url, timeout=10).json()
            while not operation["done"] and time.monotonic() < deadline:
                time.sleep(POLL_SECONDS)
                operation = session.get(operation_url, timeout=10).json()
            assert [c["alternatives"][0]["text"] for c in operation["response"]["chunks"]] == (
                MONO_SENTENCES
            )
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout:
            process.stdout.close()
    stderr = stderr_path.read_text()
    assert API_KEY not in stderr
    assert seaweedfs.secret_access_key not in stderr
    assert "POST /speech/stt/v2/longRunningRecognize 200" in stderr


def test_command_line_help_names_both_engines_and_what_echo_does() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "speechkit_local", "--help"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert "echo (default)  does not recognise speech" in result.stdout
    assert "whisper         real speech recognition" in result.stdout
    assert "TRANSCRIPT_CH2" in result.stdout
