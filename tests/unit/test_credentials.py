"""Credentials: key files, JWTs, token answers, the renewal schedule and the renewing provider.

The JWTs made here are verified by the local IAM server's own pure verifier, so both sides of
the exchange are held to the same rules (PS256, kid, iss, aud, exp - iat <= 3600).
"""

from __future__ import annotations

import json
import random
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from daemon import checks, config, scheduling, storage
from daemon.speechkit import credentials
from daemon.speechkit import v2 as recognition
from speechkit_local import iam
from speechkit_local.logic import RequestRejectedError

NOW = 1_700_000_000.0
KEY_ID = "ajekeyid00000000001"
ACCOUNT = "ajeserviceaccount001"
BANNER = f"PLEASE DO NOT REMOVE THIS LINE! Yandex.Cloud SA Key ID <{KEY_ID}>\n"


def private_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")


def public_pem(key: rsa.RSAPrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode("ascii")
    )


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def key_file_text(private_key: rsa.RSAPrivateKey, *, banner: bool = True) -> str:
    """What `yc iam key create --output key.json` writes."""
    return json.dumps(
        {
            "id": KEY_ID,
            "service_account_id": ACCOUNT,
            "created_at": "2024-01-01T00:00:00.000000000Z",
            "key_algorithm": "RSA_2048",
            "public_key": public_pem(private_key),
            "private_key": (BANNER if banner else "") + private_pem(private_key),
        }
    )


@pytest.fixture(scope="module")
def account_key(rsa_key: rsa.RSAPrivateKey) -> credentials.ServiceAccountKey:
    return credentials.parse_key_file(key_file_text(rsa_key))


def registered(private_key: rsa.RSAPrivateKey, key_id: str = KEY_ID) -> list[iam.AuthorizedKey]:
    return [iam.AuthorizedKey(key_id, ACCOUNT, public_pem(private_key))]


# ---------------------------------------------------------------------------- key file and JWT


def test_key_file_with_the_yc_banner_line_is_parsed_and_hides_its_key(
    rsa_key: rsa.RSAPrivateKey,
) -> None:
    key = credentials.parse_key_file(key_file_text(rsa_key))
    assert (key.key_id, key.service_account_id) == (KEY_ID, ACCOUNT)
    assert key.private_key_pem.reveal().startswith("-----BEGIN PRIVATE KEY-----")
    body_line = private_pem(rsa_key).splitlines()[1]
    assert body_line not in repr(key)
    assert credentials.parse_key_file(key_file_text(rsa_key, banner=False)).key_id == KEY_ID


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda document: "not json at all", "not JSON"),
        (lambda document: {**document, "id": ""}, "'id' is missing or empty"),
        (
            lambda document: {k: v for k, v in document.items() if k != "service_account_id"},
            "'service_account_id' is missing",
        ),
        (
            lambda document: {**document, "private_key": "-----BEGIN PRIVATE KEY-----\nxx"},
            "not an unencrypted PEM private key",
        ),
        (
            lambda document: {
                **document,
                "private_key": private_pem(ec.generate_private_key(ec.SECP256R1())),
            },
            "not an RSA key",
        ),
    ],
)
def test_broken_key_files_say_what_is_wrong_without_quoting_the_key(
    rsa_key: rsa.RSAPrivateKey, mutate: Callable[[dict[str, Any]], Any], expected: str
) -> None:
    document = json.loads(key_file_text(rsa_key))
    changed = mutate(document)
    text = changed if isinstance(changed, str) else json.dumps(changed)
    with pytest.raises(ValueError, match=expected) as caught:
        credentials.parse_key_file(text)
    assert "PRIVATE KEY" not in str(caught.value)


def test_jwt_has_the_fields_yandex_iam_expects_and_verifies(
    rsa_key: rsa.RSAPrivateKey, account_key: credentials.ServiceAccountKey
) -> None:
    jwt = credentials.make_jwt(account_key, now=NOW)
    header_part, claims_part, _ = jwt.split(".")
    header = json.loads(iam._decode_part(header_part, "header"))
    claims = json.loads(iam._decode_part(claims_part, "claims"))
    assert header == {"typ": "JWT", "alg": "PS256", "kid": KEY_ID}
    assert claims == {
        "iss": ACCOUNT,
        "aud": "https://iam.api.cloud.yandex.net/iam/v1/tokens",
        "iat": int(NOW),
        "exp": int(NOW) + 3600,
    }
    assert iam.verify_jwt(jwt, registered(rsa_key), now=NOW + 10) == ACCOUNT


def test_iam_refuses_a_jwt_signed_by_another_key(
    account_key: credentials.ServiceAccountKey,
) -> None:
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwt = credentials.make_jwt(account_key, now=NOW)
    with pytest.raises(RequestRejectedError, match="signature") as caught:
        iam.verify_jwt(jwt, registered(stranger), now=NOW)
    assert caught.value.http_status == 401


def test_iam_refuses_a_tampered_jwt(
    rsa_key: rsa.RSAPrivateKey, account_key: credentials.ServiceAccountKey
) -> None:
    header, _, signature = credentials.make_jwt(account_key, now=NOW).split(".")
    forged_claims = credentials.base64url(
        json.dumps({"iss": ACCOUNT, "aud": iam.IAM_AUDIENCE, "iat": 1, "exp": 2**40}).encode()
    )
    with pytest.raises(RequestRejectedError, match="signature"):
        iam.verify_jwt(f"{header}.{forged_claims}.{signature}", registered(rsa_key), now=NOW)


@pytest.mark.parametrize(
    ("make", "now", "expected", "status"),
    [
        (lambda key: credentials.make_jwt(key, now=NOW), NOW + 3600, "expired", 401),
        (
            lambda key: credentials.make_jwt(key, now=NOW, lifetime_seconds=3601),
            NOW,
            "exp - iat",
            400,
        ),
        (
            lambda key: credentials.make_jwt(key, now=NOW, audience="https://example.com/"),
            NOW,
            "'aud'",
            401,
        ),
        (lambda key: credentials.make_jwt(key, now=NOW + 3600), NOW, "future", 401),
        (lambda key: "only.two", NOW, "header.claims.signature", 400),
    ],
)
def test_iam_checks_the_claims(
    rsa_key: rsa.RSAPrivateKey,
    account_key: credentials.ServiceAccountKey,
    make: Callable[[credentials.ServiceAccountKey], str],
    now: float,
    expected: str,
    status: int,
) -> None:
    with pytest.raises(RequestRejectedError, match=expected) as caught:
        iam.verify_jwt(make(account_key), registered(rsa_key), now=now)
    assert caught.value.http_status == status


def test_iam_refuses_an_unknown_kid_and_a_foreign_issuer(
    rsa_key: rsa.RSAPrivateKey, account_key: credentials.ServiceAccountKey
) -> None:
    jwt = credentials.make_jwt(account_key, now=NOW)
    with pytest.raises(RequestRejectedError, match="kid"):
        iam.verify_jwt(jwt, registered(rsa_key, key_id="another-key"), now=NOW)
    other_account = [iam.AuthorizedKey(KEY_ID, "ajeanotheraccount001", public_pem(rsa_key))]
    with pytest.raises(RequestRejectedError, match="'iss'"):
        iam.verify_jwt(jwt, other_account, now=NOW)


# ---------------------------------------------------------------------------- token answers


def test_expires_at_with_nanoseconds_and_offsets() -> None:
    assert credentials.parse_timestamp("2023-11-14T22:13:20Z") == NOW
    assert credentials.parse_timestamp("2023-11-14T22:13:20.938779385Z") == pytest.approx(
        NOW + 0.938779385
    )
    assert credentials.parse_timestamp("2023-11-15T01:13:20+03:00") == NOW
    assert credentials.parse_timestamp(iam.format_expires_at(NOW + 15.5)) == NOW + 15.5
    with pytest.raises(ValueError, match="RFC 3339"):
        credentials.parse_timestamp("tomorrow")


def test_token_answers_are_read_and_odd_ones_never_quoted() -> None:
    answer = iam.iam_answer("t1.secret-token", NOW + 43200)
    token = credentials.token_from_iam_answer(answer, now=NOW)
    assert (token.value, token.lifetime_seconds) == ("t1.secret-token", 43200.0)
    assert "t1.secret-token" not in repr(token)
    metadata = credentials.token_from_metadata_answer(iam.metadata_answer("t1.meta", 3599.7))
    assert (metadata.value, metadata.lifetime_seconds) == ("t1.meta", 3599.0)
    with pytest.raises(ValueError, match="expiresAt") as caught:
        credentials.token_from_iam_answer({"iamToken": "t1.secret-token"}, now=NOW)
    assert "t1.secret-token" not in str(caught.value)
    with pytest.raises(ValueError, match="expires_in"):
        credentials.token_from_metadata_answer({"access_token": "t1.x", "expires_in": "soon"})


# ---------------------------------------------------------------------------- schedule


def test_a_twelve_hour_token_is_renewed_hourly() -> None:
    schedule = credentials.token_schedule(100.0, 12 * 3600)
    assert schedule.refresh_at == 100.0 + 3600
    assert schedule.usable_until == 100.0 + 12 * 3600 - 30


def test_a_short_token_is_renewed_with_a_quarter_of_its_life_left() -> None:
    schedule = credentials.token_schedule(0.0, 15.0)
    assert schedule.refresh_at == pytest.approx(11.25)
    assert schedule.usable_until == pytest.approx(14.25)


def test_a_token_that_arrives_expired_is_never_sent() -> None:
    schedule = credentials.token_schedule(50.0, -20.0)
    assert schedule.refresh_at <= 50.0
    assert schedule.usable_until <= 50.0


def test_retries_back_off_from_a_second_to_a_minute() -> None:
    rng = random.Random(7)
    delays = [
        scheduling.retry_delay(failures, rng, cap=credentials.MAX_RETRY_SECONDS)
        for failures in range(1, 12)
    ]
    assert 0.5 <= delays[0] <= 1.0
    assert all(30.0 <= delay <= 60.0 for delay in delays[7:])


def test_config_key_names_the_credential_in_use(
    account_key: credentials.ServiceAccountKey,
) -> None:
    assert credentials.config_key(config.SpeechKit(api_key=config.Secret("k"))) == (
        "speechkit.api_key"
    )
    assert credentials.config_key(config.SpeechKit(iam_token=config.Secret("t"))) == (
        "speechkit.iam_token"
    )
    assert credentials.config_key(config.SpeechKit(service_account_key=account_key)) == (
        "speechkit.service_account_key_file"
    )
    assert credentials.config_key(config.SpeechKit(metadata_service=True)) == (
        "speechkit.metadata_service"
    )


def test_static_credentials_never_show_the_key() -> None:
    provider = credentials.from_settings(config.SpeechKit(api_key=config.Secret("AQVN-secret")))
    assert provider.authorization_header() == "Api-Key AQVN-secret"
    assert "AQVN-secret" not in repr(provider)
    bearer = credentials.from_settings(config.SpeechKit(iam_token=config.Secret("t1.static")))
    assert bearer.authorization_header() == "Bearer t1.static"


# ---------------------------------------------------------------------------- the provider


class FakeTokenService:
    """Hands out numbered tokens, or fails as told; counts calls."""

    def __init__(self, lifetime: float = 100.0) -> None:
        self.lifetime = lifetime
        self.calls = 0
        self.failure: credentials.CredentialsError | None = None
        self.gate: threading.Event | None = None  # when set, fetches wait for it
        self.entered = threading.Event()

    def __call__(self) -> credentials.Token:
        self.calls += 1
        self.entered.set()
        if self.gate is not None:
            self.gate.wait(10)
        if self.failure is not None:
            raise self.failure
        return credentials.Token(f"t1.token-{self.calls}", self.lifetime)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def provider_for(
    service: FakeTokenService, clock: Clock, timeout: float = 5.0
) -> credentials.RefreshingCredentials:
    return credentials.RefreshingCredentials(
        service,
        source="the fake token service",
        timeout_seconds=timeout,
        monotonic=clock,
        rng=random.Random(1),
    )


def test_token_is_reused_until_due_then_renewed() -> None:
    service, clock = FakeTokenService(lifetime=100.0), Clock()
    provider = provider_for(service, clock)
    assert provider.authorization_header() == "Bearer t1.token-1"
    clock.now += 74.0
    assert provider.authorization_header() == "Bearer t1.token-1"
    assert service.calls == 1
    clock.now += 2.0  # past 75 s: a quarter of the life is left
    assert provider.authorization_header() == "Bearer t1.token-2"
    assert service.calls == 2


def test_a_failed_renewal_keeps_the_valid_token_and_backs_off() -> None:
    service, clock = FakeTokenService(lifetime=100.0), Clock()
    provider = provider_for(service, clock)
    provider.authorization_header()
    clock.now += 80.0
    service.failure = credentials.CredentialsError("IAM failed (HTTP 503)")
    assert provider.authorization_header() == "Bearer t1.token-1"
    assert provider.authorization_header() == "Bearer t1.token-1"
    assert service.calls == 2  # the second call fell inside the backoff: no new attempt
    clock.now += 1.0  # the first retry comes within a second
    service.failure = None
    assert provider.authorization_header() == "Bearer t1.token-3"


def test_without_a_valid_token_a_failure_is_raised_and_retried_later() -> None:
    service, clock = FakeTokenService(), Clock()
    provider = provider_for(service, clock)
    service.failure = credentials.CredentialsError("IAM refused the key", auth=True)
    with pytest.raises(credentials.CredentialsError) as caught:
        provider.authorization_header()
    assert caught.value.auth is True
    with pytest.raises(credentials.CredentialsError, match="IAM refused the key"):
        provider.authorization_header()
    assert service.calls == 1
    clock.now += 1.0
    service.failure = None
    assert provider.authorization_header() == "Bearer t1.token-2"


def test_a_token_refused_by_the_api_is_replaced_at_the_next_call() -> None:
    service, clock = FakeTokenService(), Clock()
    provider = provider_for(service, clock)
    first = provider.authorization_header()
    provider.refused("Bearer some-older-token")
    assert provider.authorization_header() == first
    provider.refused(first)
    assert provider.authorization_header() == "Bearer t1.token-2"


def test_concurrent_callers_without_a_token_share_one_exchange() -> None:
    service, clock = FakeTokenService(), Clock()
    provider = provider_for(service, clock)
    service.gate = threading.Event()
    headers: list[str] = []
    lock = threading.Lock()

    def call() -> None:
        header = provider.authorization_header()
        with lock:
            headers.append(header)

    threads = [threading.Thread(target=call) for _ in range(8)]
    for thread in threads:
        thread.start()
    assert service.entered.wait(10)
    service.gate.set()
    for thread in threads:
        thread.join(10)
    assert headers == ["Bearer t1.token-1"] * 8
    assert service.calls == 1


def test_while_one_caller_renews_the_others_keep_the_valid_token() -> None:
    service, clock = FakeTokenService(lifetime=100.0), Clock()
    provider = provider_for(service, clock, timeout=60.0)
    provider.authorization_header()
    clock.now += 80.0
    service.gate = threading.Event()
    service.entered.clear()
    renewed: list[str] = []
    meanwhile: list[str] = []
    renewer = threading.Thread(target=lambda: renewed.append(provider.authorization_header()))
    other = threading.Thread(target=lambda: meanwhile.append(provider.authorization_header()))
    renewer.start()
    try:
        assert service.entered.wait(10)
        # The renewal hangs on the network (until the gate opens); the other caller must not
        # wait for it: it finishes while the renewal is still stuck.
        other.start()
        other.join(10)
        assert meanwhile == ["Bearer t1.token-1"]
    finally:
        service.gate.set()
        renewer.join(10)
        if other.ident is not None:
            other.join(10)
    assert renewed == ["Bearer t1.token-2"]
    assert provider.authorization_header() == "Bearer t1.token-2"


def test_a_caller_waits_at_most_the_timeout_for_someone_elses_exchange() -> None:
    service, clock = FakeTokenService(), Clock()
    provider = provider_for(service, clock, timeout=0.2)
    service.gate = threading.Event()
    first = threading.Thread(target=provider.authorization_header)
    first.start()
    try:
        assert service.entered.wait(10)
        with pytest.raises(credentials.CredentialsError, match="timed out"):
            provider.authorization_header()
    finally:
        service.gate.set()
        first.join(10)


def test_recognition_client_turns_a_missing_token_into_an_error_before_sending() -> None:
    service, clock = FakeTokenService(), Clock()
    service.failure = credentials.CredentialsError("IAM unreachable: ConnectionError")
    client = recognition.RecognitionClient(
        config.SpeechKit(operations_url="http://127.0.0.1:9/operations"),
        credentials=provider_for(service, clock),
    )
    try:
        with pytest.raises(recognition.ApiError) as caught:
            client.submit("http://127.0.0.1:9/bucket/key", {})
    finally:
        client.close()
    # Not AMBIGUOUS: nothing left this machine, so a retry cannot pay twice.
    assert caught.value.kind == recognition.TRANSIENT
    service.failure = credentials.CredentialsError("IAM refused the key", auth=True)
    clock.now += 120.0
    client = recognition.RecognitionClient(
        config.SpeechKit(), credentials=provider_for(service, clock)
    )
    try:
        with pytest.raises(recognition.ApiError) as refused:
            client.get_operation("e03nothing")
    finally:
        client.close()
    assert refused.value.kind == recognition.AUTH


# ---------------------------------------------------------------------------- config


ENV = {"YC_ACCESS_KEY_ID": "key-id", "YC_SECRET_ACCESS_KEY": "s3-secret", "YC_API_KEY": "api"}


def document(speechkit: dict[str, Any]) -> dict[str, Any]:
    return {
        "watch": [{"path": "/srv/inbox"}],
        "storage": {
            "bucket": "bucket",
            "access_key_id": "${YC_ACCESS_KEY_ID}",
            "secret_access_key": "${YC_SECRET_ACCESS_KEY}",
        },
        "speechkit": speechkit,
    }


def parse(speechkit: dict[str, Any]) -> config.Config:
    return config.parse(document(speechkit), source=Path("conf.yaml"), environ=ENV)


def problems(speechkit: dict[str, Any]) -> list[str]:
    with pytest.raises(config.ConfigError) as caught:
        parse(speechkit)
    return caught.value.problems


def test_exactly_one_credential_is_required() -> None:
    assert problems({}) == [
        "conf.yaml: at 'speechkit': set exactly one of api_key, iam_token, "
        "service_account_key_file, metadata_service: true (none is set)"
    ]
    assert problems({"api_key": "${YC_API_KEY}", "metadata_service": True}) == [
        "conf.yaml: at 'speechkit': set exactly one of api_key, iam_token, "
        "service_account_key_file, metadata_service: true (found api_key and metadata_service)"
    ]
    assert problems({"api_key": ""}) == [
        "conf.yaml: at 'speechkit.api_key': must not be empty (leave the key out, or write "
        "null, to use another one)"
    ]


def test_null_and_false_alternatives_leave_the_one_credential() -> None:
    settings = parse(
        {"api_key": None, "iam_token": None, "service_account_key_file": None,
         "metadata_service": True}
    )  # fmt: skip
    assert settings.speechkit.metadata_service is True
    assert settings.speechkit.api_key is None
    assert settings.warnings == ()


def test_a_static_iam_token_is_accepted_with_a_warning() -> None:
    settings = parse({"iam_token": "t1.static-token"})
    assert settings.speechkit.iam_token == config.Secret("t1.static-token")
    assert "t1.static-token" in settings.secrets()
    assert len(settings.warnings) == 1
    assert "expires within 12 hours" in settings.warnings[0]
    assert "t1.static-token" not in settings.warnings[0]


def test_key_file_is_parsed_at_load_and_its_private_key_counts_as_a_secret(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey
) -> None:
    key_file = tmp_path / "key.json"
    key_file.write_text(key_file_text(rsa_key))
    key_file.chmod(0o600)
    settings = parse({"service_account_key_file": str(key_file)})
    account = settings.speechkit.service_account_key
    assert account is not None
    assert account.service_account_id == ACCOUNT
    assert account.private_key_pem.reveal() in settings.secrets()
    assert private_pem(rsa_key).splitlines()[1] in settings.secrets()  # each line is redacted
    assert private_pem(rsa_key).splitlines()[1] not in repr(settings)
    assert settings.warnings == ()


def test_a_broken_or_missing_key_file_is_a_config_error_naming_the_key(tmp_path: Path) -> None:
    broken = tmp_path / "key.json"
    broken.write_text('{"id": "x"}')
    assert problems({"service_account_key_file": str(broken)}) == [
        f"conf.yaml: at 'speechkit.service_account_key_file': {broken}: not an authorized key "
        "file: 'service_account_id' is missing or empty"
    ]
    missing = tmp_path / "none.json"
    assert problems({"service_account_key_file": str(missing)}) == [
        f"conf.yaml: at 'speechkit.service_account_key_file': cannot read {missing}: "
        "No such file or directory"
    ]


def test_secret_files_readable_by_every_user_are_warned_about(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey
) -> None:
    api_key_file = tmp_path / "api_key"
    api_key_file.write_text("AQVN-from-a-file\n")
    api_key_file.chmod(0o644)
    settings = parse({"api_key_file": str(api_key_file)})
    assert settings.speechkit.api_key == config.Secret("AQVN-from-a-file")
    [warning] = settings.warnings
    assert "at 'speechkit.api_key_file'" in warning
    assert "every user of this machine can read it (mode 0644)" in warning
    assert "AQVN-from-a-file" not in warning
    api_key_file.chmod(0o640)
    assert parse({"api_key_file": str(api_key_file)}).warnings == ()
    key_file = tmp_path / "key.json"
    key_file.write_text(key_file_text(rsa_key))
    key_file.chmod(0o604)
    [key_warning] = parse({"service_account_key_file": str(key_file)}).warnings
    assert "at 'speechkit.service_account_key_file'" in key_warning
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o604


# ---------------------------------------------------------------------------- check lines


def test_check_lines_line_up_and_mask_secrets() -> None:
    line = checks.format_line(checks.Result(checks.OK, "watch folder /srv/in exists"))
    assert line == "ok       watch folder /srv/in exists"
    problem = checks.format_line(
        checks.Result(checks.PROBLEM, "refused key AQVN-secret-key"), ["AQVN-secret-key"]
    )
    assert problem == "PROBLEM  refused key ***"


def test_storage_errors_name_the_key_to_check() -> None:
    settings = config.Storage(
        bucket="b", access_key_id=config.Secret("a"), secret_access_key=config.Secret("s")
    )

    def advice(message: str) -> str:
        return checks.storage_problem(storage.StorageError(message, auth=True), settings)

    assert advice("storage refused the request: SignatureDoesNotMatch (HTTP 403)") == (
        "storage: the bucket refused our keys (SignatureDoesNotMatch): check "
        "storage.secret_access_key"
    )
    assert "check storage.access_key_id" in advice(
        "storage refused the request: InvalidAccessKeyId (HTTP 403)"
    )
    assert "check storage.bucket" in advice("storage refused the request: NoSuchBucket (HTTP 404)")
    assert "check storage.endpoint_url" in advice("storage unreachable: connection failed")
    assert advice("storage unreachable: the proxy refused the tunnel (403 Forbidden)").endswith(
        f"does not let this host reach {settings.endpoint_url}; allow it there, or name the host "
        "in NO_PROXY"
    )
    assert advice(
        "storage unreachable: the proxy wants credentials (407 Proxy Authentication Required)"
    ).endswith(
        "give them in the proxy's URL (HTTPS_PROXY or ALL_PROXY: http://user:password@proxy:port)"
    )
    assert "check storage.endpoint_url" in advice(
        "storage unreachable: the proxy could not reach the server (502 Bad Gateway)"
    )


def test_credential_probe_verdicts() -> None:
    def verdict(kind: str, status: int | None) -> checks.Result:
        error = recognition.ApiError(kind, "message", status=status)
        return checks.api_problem(
            error, "speechkit.api_key", "speechkit.operations_url", "http://api/operations"
        )

    assert verdict(recognition.NOT_FOUND, 404).status == checks.OK
    assert verdict(recognition.PERMANENT, 400).status == checks.OK
    unauthenticated = verdict(recognition.AUTH, 401)
    assert unauthenticated.status == checks.PROBLEM
    assert "refused speechkit.api_key" in unauthenticated.message
    assert "ai.speechkit-stt.user" in verdict(recognition.AUTH, 403).message
    assert verdict(recognition.TRANSIENT, 503).status == checks.PROBLEM
    wrong_url = verdict(recognition.NOT_THE_API, 404)
    assert wrong_url == checks.Result(
        checks.PROBLEM,
        "speechkit.operations_url: http://api/operations is not the SpeechKit API (message; "
        "HTTP 404): check speechkit.operations_url",
    )


def test_folder_and_state_file_checks_leave_nothing_behind(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    assert checks.check_folder(inbox, "watch folder", "watch[0].path", writable=True) == (
        checks.Result(checks.OK, f"watch folder {inbox} exists and is writable")
    )
    assert list(inbox.iterdir()) == []
    missing = tmp_path / "missing"
    assert checks.check_folder(missing, "watch folder", "watch[0].path", writable=True) == (
        checks.Result(
            checks.PROBLEM, f"watch folder {missing} does not exist: create it, or fix "
            "watch[0].path",
        )
    )  # fmt: skip
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert checks.check_folder(a_file, "watch folder", "k", writable=False).status == (
        checks.PROBLEM
    )
    later = tmp_path / "out" / "deeper"
    assert checks.check_output_dir(later, "watch[0].output_dir").status == checks.OK
    assert not later.exists()
    state_file = tmp_path / "state" / "state.db"
    assert checks.check_state_file(state_file).message.endswith("can be created")
    assert not state_file.parent.exists()
    state_file.parent.mkdir()
    state_file.write_bytes(b"")
    assert checks.check_state_file(state_file) == checks.Result(
        checks.OK, f"state file {state_file} is writable"
    )
    assert checks.check_state_file(a_file / "state.db").status == checks.PROBLEM
