"""The recognition clients (v2 and v3) over daemon.transport, against a loopback recorder: the
headers every call carries (a ~/.netrc entry for the host does not replace the Authorization
header), JSON bodies, query strings, the environment's proxies and NO_PROXY, and what a call
without an answer means (a submission that may have left is AMBIGUOUS; a refused one, or one
whose tunnel the proxy refused, TRANSIENT).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon import config
from daemon.outcomes import Kind
from daemon.speechkit import credentials
from daemon.speechkit.v2 import USER_AGENT, ApiError, RecognitionClient
from daemon.speechkit.v3 import V3Client
from daemon.transport import Transport
from tests.loopback import Server, TunnelRefusingProxy, clear_proxies, closed_port, serve

API_KEY = "test-key-not-a-secret"
OPERATION = {"id": "e03op", "done": False}


class _Recorder(TunnelRefusingProxy):
    """Answers like the API: an operation for POST and GET, an empty stream elsewhere; a path
    with `/slow` in it answers after 1.5 s. CONNECT (a tunnel asked of a proxy) is refused."""

    def _answer(self) -> None:
        self.record()
        if "/slow" in self.path:
            time.sleep(1.5)
        payload = json.dumps(OPERATION).encode() if self.command in ("POST", "GET") else b"{}"
        if "getRecognition" in self.path:
            payload = b'{"result": {}}\n'
        self.reply(200, payload, {"Content-Type": "application/json"})

    do_GET = do_POST = do_DELETE = _answer  # noqa: N815 - http.server's names


@pytest.fixture
def server() -> Iterator[Server]:
    with serve(_Recorder) as served:
        yield served


@pytest.fixture(autouse=True)
def _no_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    clear_proxies(monkeypatch)


def _settings(base: str, timeout: float = 5, api: str = "") -> config.SpeechKit:
    """Endpoints under `base`; those of the API `api` under `base`/slow."""
    v2 = f"{base}/slow" if api == "v2" else base
    v3 = f"{base}/slow" if api == "v3" else base
    return config.SpeechKit(
        recognize_url=f"{v2}/speech/stt/v2/longRunningRecognize",
        operations_url=f"{base}/operations",
        stt_v3_url=f"{v3}/stt/v3",
        request_timeout_seconds=timeout,
    )


def _client(
    settings: config.SpeechKit, kind: type[RecognitionClient] = RecognitionClient
) -> RecognitionClient:
    return kind(settings, Transport(), credentials.StaticCredentials(f"Api-Key {API_KEY}"))


def _lowered(headers: dict[str, str]) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


def test_a_submission_sends_json_with_our_headers_and_a_netrc_entry_changes_nothing(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, seen = server
    netrc = tmp_path / ".netrc"
    netrc.write_text("machine 127.0.0.1 login someone password netrc-password\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("NETRC", str(netrc))
    client = _client(_settings(url))
    try:
        operation = client.submit("https://storage.example/bucket/key", {"languageCode": "ru-RU"})
        client.get_operation("e03op")
    finally:
        client.close()
    assert operation == OPERATION
    (method, path, headers, body), (check_method, check_path, check_headers, _) = seen
    assert (method, path) == ("POST", "/speech/stt/v2/longRunningRecognize")
    assert json.loads(body) == {
        "config": {"specification": {"languageCode": "ru-RU"}},
        "audio": {"uri": "https://storage.example/bucket/key"},
    }
    for sent in (_lowered(headers), _lowered(check_headers)):
        assert sent["authorization"] == f"Api-Key {API_KEY}"  # not netrc's Basic credentials
        assert sent["user-agent"] == USER_AGENT
        assert sent["x-client-request-id"]
    assert _lowered(headers)["content-type"] == "application/json"
    assert (check_method, check_path) == ("GET", "/operations/e03op")
    assert (
        _lowered(headers)["x-client-request-id"] != _lowered(check_headers)["x-client-request-id"]
    )


def test_v3_results_calls_carry_the_operation_id_in_the_query(server: Server) -> None:
    url, seen = server
    client = _client(_settings(url), V3Client)
    assert isinstance(client, V3Client)
    try:
        assert client.get_recognition("e03 op/1") == [{"result": {}}]
        client.delete_recognition("e03op")
    finally:
        client.close()
    assert [(method, path) for method, path, _, _ in seen] == [
        ("GET", "/stt/v3/getRecognition?operationId=e03+op%2F1"),
        ("DELETE", "/stt/v3/deleteRecognition?operationId=e03op"),
    ]
    assert all(
        _lowered(headers)["authorization"] == f"Api-Key {API_KEY}" for *_, headers, _ in seen
    )


def test_a_submission_whose_answer_times_out_is_ambiguous_and_not_sent_again(
    server: Server,
) -> None:
    url, seen = server
    client = _client(_settings(url, timeout=0.3, api="v2"))
    try:
        with pytest.raises(ApiError) as caught:
            client.submit("https://storage.example/bucket/key", {})
    finally:
        client.close()
    assert caught.value.kind == Kind.AMBIGUOUS  # the service may have created the operation
    assert str(caught.value) == "recognition API unreachable: timed out"
    assert len(seen) == 1


def test_a_v3_submission_whose_answer_times_out_is_ambiguous(server: Server) -> None:
    url, seen = server
    client = _client(_settings(url, timeout=0.3, api="v3"), V3Client)
    assert isinstance(client, V3Client)
    try:
        with pytest.raises(ApiError) as caught:
            client.submit_file("https://storage.example/bucket/key", {})
    finally:
        client.close()
    assert caught.value.kind == Kind.AMBIGUOUS
    assert len(seen) == 1


def test_a_status_check_without_an_answer_is_transient(server: Server) -> None:
    url, _ = server
    client = _client(_settings(url, timeout=0.3))
    try:
        with pytest.raises(ApiError) as caught:
            client.get_operation("slow")
    finally:
        client.close()
    assert caught.value.kind == Kind.TRANSIENT
    assert str(caught.value) == "operations API unreachable: timed out"


def test_a_refused_connection_is_transient_even_for_a_submission() -> None:
    client = _client(_settings(f"http://127.0.0.1:{closed_port()}"))
    try:
        with pytest.raises(ApiError) as caught:
            client.submit("https://storage.example/bucket/key", {})
        with pytest.raises(ApiError) as probe:
            client.submit_without_audio({})
    finally:
        client.close()
    assert caught.value.kind == Kind.TRANSIENT  # nothing left: a retry cannot pay twice
    assert str(caught.value) == "recognition API unreachable: connection refused"
    assert probe.value.kind == Kind.TRANSIENT


def test_the_proxy_from_the_environment_carries_the_calls(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy, seen = server  # the recorder plays the proxy: it sees absolute URLs
    monkeypatch.setenv("HTTP_PROXY", proxy)
    monkeypatch.setenv("HTTPS_PROXY", proxy)
    client = _client(_settings("http://speechkit.invalid"))
    try:
        client.submit("https://storage.example/bucket/key", {})
    finally:
        client.close()
    method, path, headers, _ = seen[0]
    assert (method, path) == ("POST", "http://speechkit.invalid/speech/stt/v2/longRunningRecognize")
    assert _lowered(headers)["authorization"] == f"Api-Key {API_KEY}"
    client = _client(_settings("https://speechkit.invalid"))
    try:
        with pytest.raises(ApiError):  # the recorder refuses the tunnel
            client.get_operation("e03op")
    finally:
        client.close()
    assert seen[1][:2] == ("CONNECT", "speechkit.invalid:443")  # HTTPS went through the proxy


def test_a_submission_whose_tunnel_the_proxy_refuses_is_transient_not_ambiguous(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The proxy said no to CONNECT: the request never reached the API, so sending it again
    cannot pay twice (an AMBIGUOUS failure would count towards the file's submission cap)."""
    proxy, seen = server
    monkeypatch.setenv("HTTPS_PROXY", proxy)
    client = _client(_settings("https://speechkit.invalid"))
    try:
        with pytest.raises(ApiError) as caught:
            client.submit("https://storage.example/bucket/key", {})
    finally:
        client.close()
    assert [request[:2] for request in seen] == [("CONNECT", "speechkit.invalid:443")]
    assert caught.value.kind == Kind.TRANSIENT
    assert str(caught.value) == (
        "recognition API unreachable: the proxy refused the tunnel (403 Forbidden)"
    )


def test_no_proxy_sends_the_api_host_direct(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, seen = server
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")
    client = _client(_settings(url))
    try:
        client.get_operation("e03op")
    finally:
        client.close()
    assert seen[0][:2] == ("GET", "/operations/e03op")  # origin form: no proxy in between
