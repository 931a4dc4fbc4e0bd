"""The credential providers against the local server's IAM exchange and metadata service.

Real HTTP, real JWT signatures and verification; the server and the providers share a
controllable clock, so tokens expire and get renewed without the test waiting for them.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from daemon import config
from daemon.speechkit import credentials
from daemon.speechkit import v2 as recognition
from speechkit_local import LocalSpeechKit, ServerSettings, iam
from tests.loopback import TunnelRefusingProxy, clear_proxies, serve

KEY_ID = "ajekeyintegration001"
ACCOUNT = "ajelocalspeechkit001"  # the local server's default service account
LIFETIME = 15.0  # seconds an issued token lives on the server
START = 1_700_000_000.0


class Clock:
    """A wall clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


def pem_of(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")


def public_pem_of(key: rsa.RSAPrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode("ascii")
    )


def account_key(private_key: rsa.RSAPrivateKey) -> credentials.ServiceAccountKey:
    return credentials.parse_key_file(
        json.dumps(
            {"id": KEY_ID, "service_account_id": ACCOUNT, "private_key": pem_of(private_key)}
        )
    )


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def clock() -> Clock:
    return Clock()


def start_server(clock: Clock, rsa_key: rsa.RSAPrivateKey, **overrides: Any) -> LocalSpeechKit:
    settings = ServerSettings(
        iam_keys=(iam.AuthorizedKey(KEY_ID, ACCOUNT, public_pem_of(rsa_key)),),
        iam_token_lifetime_seconds=LIFETIME,
        **overrides,
    )
    server = LocalSpeechKit(settings, clock=clock)
    server.start()
    return server


@pytest.fixture
def server(clock: Clock, rsa_key: rsa.RSAPrivateKey) -> Iterator[LocalSpeechKit]:
    started = start_server(clock, rsa_key)
    try:
        yield started
    finally:
        started.stop()


def key_settings(server: LocalSpeechKit, key: credentials.ServiceAccountKey) -> config.SpeechKit:
    return config.SpeechKit(
        service_account_key=key,
        iam_url=server.iam_url,
        recognize_url=server.recognize_url,
        operations_url=server.operations_url,
        request_timeout_seconds=5.0,
    )


def client_for(
    settings: config.SpeechKit, wall: Clock, monotonic: Clock | None = None
) -> recognition.RecognitionClient:
    provider = credentials.from_settings(settings, clock=wall, monotonic=monotonic or wall)
    return recognition.RecognitionClient(settings, credentials=provider)


def unknown_operation() -> str:
    return "e03" + secrets.token_hex(8)[:17]


def probe(client: recognition.RecognitionClient) -> recognition.ApiError:
    """GET an operation that does not exist: NOT_FOUND proves the token was accepted."""
    with pytest.raises(recognition.ApiError) as caught:
        client.get_operation(unknown_operation())
    return caught.value


def iam_stats(server: LocalSpeechKit) -> dict[str, Any]:
    stats: dict[str, Any] = server.stats()["iam"]
    return stats


def test_a_key_file_buys_a_token_the_api_accepts(
    server: LocalSpeechKit, clock: Clock, rsa_key: rsa.RSAPrivateKey
) -> None:
    client = client_for(key_settings(server, account_key(rsa_key)), clock)
    try:
        assert probe(client).kind == recognition.NOT_FOUND
        assert probe(client).kind == recognition.NOT_FOUND
    finally:
        client.close()
    assert iam_stats(server)["exchanges"] == 1  # the token is reused, not bought per request


def test_tokens_are_renewed_before_they_expire(
    server: LocalSpeechKit, clock: Clock, rsa_key: rsa.RSAPrivateKey
) -> None:
    client = client_for(key_settings(server, account_key(rsa_key)), clock)
    try:
        probe(client)
        clock.now += 12.0  # past the renewal point (a quarter of the life left), still valid
        assert probe(client).kind == recognition.NOT_FOUND
        assert iam_stats(server)["exchanges"] == 2
        clock.now += 30.0  # both tokens so far have expired on the server
        assert probe(client).kind == recognition.NOT_FOUND
        assert iam_stats(server)["exchanges"] == 3
    finally:
        client.close()
    first_token = server.issued_tokens()[0]
    expired = requests.get(
        f"{server.operations_url}/{unknown_operation()}",
        headers={"Authorization": f"Bearer {first_token}"},
        timeout=5,
    )
    assert expired.status_code == 401


def test_a_token_the_api_refuses_is_replaced_at_the_next_request(
    server: LocalSpeechKit, clock: Clock, rsa_key: rsa.RSAPrivateKey
) -> None:
    own_clock = Clock()  # the daemon's clock stands still: it believes its token is fresh
    client = client_for(key_settings(server, account_key(rsa_key)), clock, own_clock)
    try:
        probe(client)
        clock.now += LIFETIME + 1  # the server's clock moves on: the token is dead there
        refused = probe(client)
        assert (refused.kind, refused.status) == (recognition.AUTH, 401)
        assert probe(client).kind == recognition.NOT_FOUND
    finally:
        client.close()
    assert iam_stats(server)["exchanges"] == 2


def test_an_iam_outage_keeps_the_valid_token_and_retries_later(
    server: LocalSpeechKit, clock: Clock, rsa_key: rsa.RSAPrivateKey
) -> None:
    client = client_for(key_settings(server, account_key(rsa_key)), clock)
    try:
        probe(client)
        server.set_iam_outage(503)
        clock.now += 12.0  # renewal is due, the token is still good for 3 s
        assert probe(client).kind == recognition.NOT_FOUND
        assert probe(client).kind == recognition.NOT_FOUND
        assert iam_stats(server)["outage_answers"] == 1  # the second call was inside the backoff
        server.set_iam_outage(None)
        clock.now += 1.0
        assert probe(client).kind == recognition.NOT_FOUND
    finally:
        client.close()
    assert iam_stats(server)["exchanges"] == 2


def test_without_any_token_an_outage_is_transient_and_nothing_is_sent(
    server: LocalSpeechKit, clock: Clock, rsa_key: rsa.RSAPrivateKey
) -> None:
    server.set_iam_outage(503)
    client = client_for(key_settings(server, account_key(rsa_key)), clock)
    try:
        failure = probe(client)
    finally:
        client.close()
    assert failure.kind == recognition.TRANSIENT
    assert "IAM failed (HTTP 503" in failure.message
    assert server.stats()["operation_requests"] == 0


def test_an_iam_the_proxy_will_not_reach_is_named_and_transient(
    server: LocalSpeechKit,
    clock: Clock,
    rsa_key: rsa.RSAPrivateKey,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clear_proxies(monkeypatch)
    settings = dataclasses.replace(
        key_settings(server, account_key(rsa_key)), iam_url="https://iam.invalid/iam/v1/tokens"
    )
    with serve(TunnelRefusingProxy) as (proxy_url, seen):
        monkeypatch.setenv("HTTPS_PROXY", proxy_url)  # the API (plain HTTP here) goes direct
        client = client_for(settings, clock)
        try:
            failure = probe(client)
        finally:
            client.close()
    assert failure.kind == recognition.TRANSIENT
    assert "IAM unreachable: the proxy refused the tunnel (403 Forbidden)" in failure.message
    assert [request[:2] for request in seen] == [("CONNECT", "iam.invalid:443")]
    assert server.stats()["operation_requests"] == 0


def test_a_key_iam_does_not_know_is_an_auth_failure(server: LocalSpeechKit, clock: Clock) -> None:
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    client = client_for(key_settings(server, account_key(stranger)), clock)
    try:
        failure = probe(client)
    finally:
        client.close()
    assert failure.kind == recognition.AUTH
    assert "IAM refused the service account key (HTTP 401" in failure.message
    assert "signature verification failed" in failure.message
    assert server.stats()["operation_requests"] == 0
    assert iam_stats(server)["refused"] == 1


def test_concurrent_workers_share_one_exchange(
    server: LocalSpeechKit, clock: Clock, rsa_key: rsa.RSAPrivateKey
) -> None:
    client = client_for(key_settings(server, account_key(rsa_key)), clock)
    kinds: list[str] = []
    lock = threading.Lock()

    def work() -> None:
        kind = probe(client).kind
        with lock:
            kinds.append(kind)

    threads = [threading.Thread(target=work) for _ in range(8)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    finally:
        client.close()
    assert kinds == [recognition.NOT_FOUND] * 8
    assert iam_stats(server)["exchanges"] == 1


def test_exchange_endpoint_answers_like_iam(
    server: LocalSpeechKit, clock: Clock, rsa_key: rsa.RSAPrivateKey
) -> None:
    jwt = credentials.make_jwt(account_key(rsa_key), now=clock.now)
    answer = requests.post(server.iam_url, json={"jwt": jwt}, timeout=5)
    assert answer.status_code == 200
    body = answer.json()
    assert sorted(body) == ["expiresAt", "iamToken"]
    assert body["iamToken"].startswith("t1.")
    assert credentials.parse_timestamp(body["expiresAt"]) == pytest.approx(clock.now + LIFETIME)
    garbage = requests.post(server.iam_url, data=b"{}", timeout=5)
    assert (garbage.status_code, garbage.json()["code"]) == (400, 3)
    assert requests.get(server.iam_url, timeout=5).status_code == 405


def test_metadata_service_tokens(clock: Clock, rsa_key: rsa.RSAPrivateKey) -> None:
    with_account = start_server(clock, rsa_key, metadata_service=True)
    without_account = start_server(clock, rsa_key)
    try:
        assert requests.get(with_account.metadata_url, timeout=5).status_code == 403
        settings = config.SpeechKit(
            metadata_service=True,
            metadata_url=with_account.metadata_url,
            operations_url=with_account.operations_url,
        )
        client = client_for(settings, clock)
        try:
            assert probe(client).kind == recognition.NOT_FOUND
        finally:
            client.close()
        assert iam_stats(with_account)["metadata_tokens"] == 1
        bare = config.SpeechKit(
            metadata_service=True,
            metadata_url=without_account.metadata_url,
            operations_url=without_account.operations_url,
        )
        provider = credentials.from_settings(bare, clock=clock, monotonic=clock)
        try:
            with pytest.raises(credentials.CredentialsError, match="service account attached"):
                provider.authorization_header()
        finally:
            provider.close()
    finally:
        with_account.stop()
        without_account.stop()


def test_local_server_command_line_serves_the_exchange(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey
) -> None:
    public_key = tmp_path / "public.pem"
    public_key.write_text(public_pem_of(rsa_key))
    port_file = tmp_path / "port"
    process = subprocess.Popen(
        [
            sys.executable, "-m", "speechkit_local", "--port-file", str(port_file),
            "--iam-public-key", str(public_key), "--iam-key-id", KEY_ID,
            "--iam-token-lifetime", "15",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        line = process.stdout.readline().decode()
        assert line.startswith("listening on http://127.0.0.1:")
        base = line.split()[-1]
        settings = config.SpeechKit(
            service_account_key=account_key(rsa_key),
            iam_url=base + iam.IAM_PATH,
            operations_url=base + "/operations",
        )
        client = recognition.RecognitionClient(settings)
        try:
            assert probe(client).kind == recognition.NOT_FOUND
        finally:
            client.close()
        stats = requests.get(base + "/_control/stats", timeout=5).json()
        assert stats["iam"]["exchanges"] == 1
        assert stats["iam"]["token_lifetime_seconds"] == 15.0
    finally:
        process.terminate()
        process.wait(10)
        if process.stdout is not None:
            process.stdout.close()
