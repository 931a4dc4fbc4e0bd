"""The local server's API v3: recognizeFileAsync (by link or inline), getRecognition's stream,
deleteRecognition and the per-second status-check quota, against a real SeaweedFS."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from speechkit_local import LocalSpeechKit, ServerSettings, devstack
from tests.fixtures_audio import fixture_path, two_speakers

API_KEY = "AQVNlocal-v3-key"
WAIT_LIMIT_SECONDS = 20.0  # a safety net against a broken server, never a timing assertion
MODEL = {
    "model": "general",
    "audioFormat": {"containerAudio": {"containerAudioType": "OGG_OPUS"}},
    "textNormalization": {"textNormalization": "TEXT_NORMALIZATION_ENABLED",
                          "literatureText": True},
    "languageRestriction": {"restrictionType": "WHITELIST", "languageCode": ["en-US"]},
}  # fmt: skip
SPEAKERS = {"speakerLabeling": {"speakerLabeling": "SPEAKER_LABELING_ENABLED"}}


@pytest.fixture
def server(seaweedfs: devstack.SeaweedFS) -> Iterator[LocalSpeechKit]:
    with LocalSpeechKit(
        ServerSettings(
            api_keys=(API_KEY,), seconds_per_minute=0.0, v3_checks_per_second=5,
            storage_endpoint=seaweedfs.endpoint_url,
            storage_access_key_id=seaweedfs.access_key_id,
            storage_secret_access_key=seaweedfs.secret_access_key,
        )
    ) as started:  # fmt: skip
        yield started


@pytest.fixture
def api() -> Iterator[requests.Session]:
    with requests.Session() as session:
        session.headers["Authorization"] = f"Api-Key {API_KEY}"
        yield session


def inline(data: bytes, **extra: Any) -> dict[str, Any]:
    return {"content": base64.b64encode(data).decode(), "recognitionModel": MODEL, **extra}


def finished(server: LocalSpeechKit, api: requests.Session, body: dict[str, Any]) -> str:
    answer = api.post(f"{server.stt_v3_url}/recognizeFileAsync", json=body, timeout=10)
    assert answer.status_code == 200, answer.text
    operation_id = answer.json()["id"]
    deadline = time.monotonic() + WAIT_LIMIT_SECONDS
    while time.monotonic() < deadline:
        polled = api.get(f"{server.operations_url}/{operation_id}", timeout=10)
        if polled.status_code == 200 and polled.json()["done"]:
            assert "chunks" not in json.dumps(polled.json())  # v3 results are not in it
            return str(operation_id)
        time.sleep(0.05)
    raise AssertionError("the operation never finished")


def messages(server: LocalSpeechKit, api: requests.Session, operation_id: str) -> list[Any]:
    answer = api.get(
        f"{server.stt_v3_url}/getRecognition", params={"operationId": operation_id}, timeout=10
    )
    assert answer.status_code == 200, answer.text
    return [json.loads(line) for line in answer.text.splitlines()]


def test_inline_mono_with_speaker_labeling_streams_final_eou_and_refinement(
    server: LocalSpeechKit, api: requests.Session
) -> None:
    operation_id = finished(server, api, inline(two_speakers(), **SPEAKERS))
    stream = messages(server, api, operation_id)
    events = [next(name for name in ("final", "eouUpdate", "finalRefinement")
                   if name in message["result"]) for message in stream]  # fmt: skip
    assert events == ["final", "eouUpdate", "finalRefinement"] * 2
    finals = [message["result"] for message in stream if "final" in message["result"]]
    assert [result["channelTag"] for result in finals] == ["0", "1"]  # two speakers
    assert finals[0]["final"]["alternatives"][0]["text"] == "hello from the watch folder"
    word = finals[0]["final"]["alternatives"][0]["words"][0]
    assert isinstance(word["startTimeMs"], str)
    assert isinstance(word["endTimeMs"], str)
    refined = stream[2]["result"]["finalRefinement"]
    assert refined["finalIndex"] == "0"
    assert refined["normalizedText"]["alternatives"][0]["text"] == "Hello from the watch folder."
    assert server.stats()["v3"]["inline"] == 1


def test_stereo_by_link_reports_channels_and_delete_removes_the_results(
    server: LocalSpeechKit, api: requests.Session, seaweedfs: devstack.SeaweedFS
) -> None:
    key = "v3/stereo.ogg"
    seaweedfs.client().put_object(
        Bucket=seaweedfs.bucket, Key=key, Body=fixture_path("stereo.ogg").read_bytes()
    )
    uri = f"{seaweedfs.endpoint_url}/{seaweedfs.bucket}/{key}"
    operation_id = finished(server, api, {"uri": uri, "recognitionModel": MODEL, **SPEAKERS})
    tags = {m["result"]["channelTag"] for m in messages(server, api, operation_id)}
    assert tags == {"0", "1"}
    deleted = api.delete(
        f"{server.stt_v3_url}/deleteRecognition", params={"operationId": operation_id}, timeout=10
    )
    assert deleted.status_code == 200
    gone = api.get(
        f"{server.stt_v3_url}/getRecognition", params={"operationId": operation_id}, timeout=10
    )
    assert gone.status_code == 404
    assert gone.json()["code"] == 5


@pytest.mark.parametrize(
    ("body", "said"),
    [
        ({"recognitionModel": MODEL}, "exactly one of uri and content"),
        ({"uri": "http://x/y", "content": "AAAA", "recognitionModel": MODEL}, "exactly one"),
        ({"content": "not base64!", "recognitionModel": MODEL}, "not valid base64"),
        ({"content": "AAAA", "recognitionModel": {**MODEL, "model": "deferred-general"}},
         "unknown model"),
        ({"content": "AAAA", "recognitionModel": MODEL, "colour": "red"}, "unknown field"),
    ],
)  # fmt: skip
def test_requests_the_service_refuses_are_400_code_3(
    server: LocalSpeechKit, api: requests.Session, body: dict[str, Any], said: str
) -> None:
    answer = api.post(f"{server.stt_v3_url}/recognizeFileAsync", json=body, timeout=10)
    assert answer.status_code == 400
    assert answer.json()["code"] == 3
    assert said in answer.json()["message"]


def test_a_request_over_60_mb_is_refused_and_status_checks_over_5_per_second_get_429(
    server: LocalSpeechKit, api: requests.Session
) -> None:
    too_big = api.post(
        f"{server.stt_v3_url}/recognizeFileAsync",
        data=b"{" + b" " * (60 * 1000 * 1000) + b"}",
        headers={"Content-Type": "application/json"}, timeout=30,
    )  # fmt: skip
    assert too_big.status_code == 413
    operation_id = finished(server, api, inline(two_speakers()))
    answers = [
        api.get(f"{server.operations_url}/{operation_id}", timeout=10).status_code
        for _ in range(12)
    ]
    assert 429 in answers
    assert server.stats()["v3"]["rate_limited_checks"] >= 1
