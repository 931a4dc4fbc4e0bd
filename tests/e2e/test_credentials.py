"""Credentials as an operator sees them: a service account key file keeps a daemon working while
its IAM tokens expire under it, secrets handed over as files work, and no secret ever shows up
in logs, outputs, `status`, `check` or the state file.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from speechkit_local import LocalSpeechKit, ServerSettings, devstack, iam
from tests.conftest import TEST_SECONDS_PER_MINUTE
from tests.e2e.conftest import SETTLE_SECONDS
from tests.e2e.harness import Daemon, wait_for
from tests.e2e.test_pipeline import MONO_TXT, done_outputs
from tests.fixtures_audio import opus_tags_packet, read_fixture, replace_tags

KEY_ID = "ajee2ekeyid000000001"
ACCOUNT = "ajelocalspeechkit001"  # the local server's service account
TOKEN_LIFETIME = 6.0  # seconds: several renewals during one test
RUN_SECONDS = 20.0  # files keep arriving this long: more than three token lifetimes
DROP_EVERY_SECONDS = 1.5  # more often than tokens are renewed: renewals come ahead of expiry
MIN_EXCHANGES = 4  # the first token and at least three renewals
WAIT_SECONDS = 90.0  # generous: this test shares two cores with others


def generate_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def write_key_file(path: Path, key: rsa.RSAPrivateKey) -> str:
    """An authorized key file as `yc iam key create` writes it; returns the private PEM."""
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")
    document = {
        "id": KEY_ID,
        "service_account_id": ACCOUNT,
        "created_at": "2024-05-01T10:00:00.000000000Z",
        "key_algorithm": "RSA_2048",
        "public_key": public_pem(key),
        "private_key": f"PLEASE DO NOT REMOVE THIS LINE! Yandex.Cloud SA Key ID <{KEY_ID}>\n{pem}",
    }
    path.write_text(json.dumps(document, indent=2), encoding="utf-8")
    path.chmod(0o600)
    return pem


def public_pem(key: rsa.RSAPrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode("ascii")
    )


def pem_body_lines(pem: str) -> list[str]:
    """The base64 lines of a PEM block: any one of them in a log is a leak."""
    return [line for line in pem.splitlines() if line and not line.startswith("-----")]


def recording(number: int) -> bytes:
    """A distinct recording (so none is answered from an earlier result) saying its number."""
    tags = opus_tags_packet("speechkit-watch tests", [f"TRANSCRIPT=Recording {number}.".encode()])
    return replace_tags(read_fixture("mono.ogg"), tags)


def everything_a_user_can_see(
    daemon: Daemon, folders: list[Path], state_folder: Path, extra: list[str]
) -> dict[str, bytes]:
    """Logs, outputs, `status` (both forms), the state file and its journal, extra texts."""
    places: dict[str, bytes] = {"daemon log": daemon.log_path.read_bytes()}
    for folder in folders:
        for path in sorted(folder.rglob("*")):
            if path.is_file() and path.suffix != ".ogg":
                places[str(path)] = path.read_bytes()
    for path in sorted(state_folder.glob("state.db*")):
        places[str(path)] = path.read_bytes()
    places["status --json"] = daemon.cli("status", "--json").stdout.encode()
    places["status"] = daemon.cli("status").stdout.encode()
    for index, text in enumerate(extra):
        places[f"extra output {index}"] = text.encode()
    return places


def assert_no_secret_anywhere(places: dict[str, bytes], hidden: dict[str, str]) -> None:
    assert hidden, "the test must look for something"
    leaks = [
        f"{what} in {where}"
        for where, content in places.items()
        for what, secret in hidden.items()
        if secret.encode() in content
    ]
    assert leaks == []


@pytest.fixture
def service_key(tmp_path: Path) -> rsa.RSAPrivateKey:
    return generate_key()


@pytest.fixture
def iam_speechkit(
    seaweedfs: devstack.SeaweedFS, service_key: rsa.RSAPrivateKey
) -> Iterator[LocalSpeechKit]:
    """The local server that knows only the service account key, and issues 15 s tokens."""
    settings = ServerSettings(
        iam_keys=(iam.AuthorizedKey(KEY_ID, ACCOUNT, public_pem(service_key)),),
        iam_token_lifetime_seconds=TOKEN_LIFETIME,
        seconds_per_minute=TEST_SECONDS_PER_MINUTE,
        storage_endpoint=seaweedfs.endpoint_url,
        storage_access_key_id=seaweedfs.access_key_id,
        storage_secret_access_key=seaweedfs.secret_access_key,
        storage_region=seaweedfs.region,
    )
    with LocalSpeechKit(settings) as server:
        yield server


def test_a_key_file_daemon_keeps_working_while_its_tokens_expire(
    tmp_path: Path,
    inbox: Path,
    seaweedfs: devstack.SeaweedFS,
    bucket: str,
    iam_speechkit: LocalSpeechKit,
    service_key: rsa.RSAPrivateKey,
) -> None:
    key_file = tmp_path / "credentials" / "key.json"
    key_file.parent.mkdir()
    private_key = write_key_file(key_file, service_key)
    unused_api_key = "AQVN-" + secrets.token_hex(8)  # the environment has one; it must not matter
    config = devstack.write_daemon_config(
        tmp_path / "config.yaml", watch_dirs=[inbox], storage=seaweedfs,
        speechkit_url=iam_speechkit.url, api_key=unused_api_key,
        state_file=tmp_path / "state" / "state.db", settle_seconds=SETTLE_SECONDS, bucket=bucket,
        extra={
            "speechkit": {"api_key": None, "service_account_key_file": str(key_file),
                          "iam_url": iam_speechkit.iam_url},
            "log_level": "debug",  # the most talkative logs are the best place to find a leak
            "auth_retry_seconds": 2,  # a token refused in flight costs seconds, not a minute
        },
    )  # fmt: skip
    daemon = Daemon(config, devstack.daemon_env(seaweedfs, unused_api_key), tmp_path / "daemon.log")
    checked = daemon.cli("check", check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert (
        f"ok       credentials: the IAM token exchange at {iam_speechkit.iam_url} works for "
        f"service account {ACCOUNT} (key {KEY_ID})" in checked.stdout.splitlines()
    )
    assert "ok       credentials: the recognition API at" in checked.stdout
    exchanges_by_check = iam_speechkit.stats()["iam"]["exchanges"]

    expected: dict[str, str] = {}
    with daemon.start():
        started = time.monotonic()
        number = 0
        while time.monotonic() - started < RUN_SECONDS:
            number += 1
            name = f"call-{number:02d}"
            temporary = inbox / f"{name}.ogg.part"
            temporary.write_bytes(recording(number))
            os.rename(temporary, inbox / f"{name}.ogg")
            expected[name] = f"recording {number}\n"
            time.sleep(DROP_EVERY_SECONDS)
        for name, text in expected.items():
            transcript = inbox / f"{name}.txt"
            wait_for(transcript.exists, transcript.name, timeout=WAIT_SECONDS)
            assert transcript.read_text(encoding="utf-8") == text
        status = daemon.wait_for_count("done", len(expected))
        assert status["counts"]["failed"] == 0
        assert status["failed"] == []
        assert daemon.stop() == 0

    assert list(inbox.glob("*.error.json")) == []
    assert iam_speechkit.stats()["iam"]["exchanges"] - exchanges_by_check >= MIN_EXCHANGES
    assert daemon.log().count("got a new IAM token") >= MIN_EXCHANGES
    issued = iam_speechkit.issued_tokens()
    hidden = {f"IAM token #{index}": token for index, token in enumerate(issued)}
    hidden.update(
        {f"private key line {index}": line
         for index, line in enumerate(pem_body_lines(private_key))}
    )  # fmt: skip
    hidden["storage secret"] = seaweedfs.secret_access_key
    hidden["unused API key"] = unused_api_key
    places = everything_a_user_can_see(
        daemon, [inbox], tmp_path / "state", [checked.stdout, checked.stderr]
    )
    assert_no_secret_anywhere(places, hidden)


def test_secrets_from_files_work_and_never_show(
    tmp_path: Path,
    inbox: Path,
    seaweedfs: devstack.SeaweedFS,
    bucket: str,
    speechkit: LocalSpeechKit,
    api_key: str,
) -> None:
    """api_key_file and secret_access_key_file, as systemd LoadCredential= hands them over."""
    secrets_folder = tmp_path / "credentials"
    secrets_folder.mkdir()
    api_key_file = secrets_folder / "api_key"
    api_key_file.write_text(api_key + "\n")
    api_key_file.chmod(0o644)  # readable by everyone: the daemon must say so
    storage_secret_file = secrets_folder / "secret_access_key"
    storage_secret_file.write_text(seaweedfs.secret_access_key)
    storage_secret_file.chmod(0o600)
    document: dict[str, Any] = devstack.daemon_config(
        watch_dirs=[inbox], storage=seaweedfs, speechkit_url=speechkit.url,
        state_file=tmp_path / "state" / "state.db", settle_seconds=SETTLE_SECONDS, bucket=bucket,
        extra={"log_level": "debug"},
    )  # fmt: skip
    del document["speechkit"]["api_key"], document["storage"]["secret_access_key"]
    document["speechkit"]["api_key_file"] = str(api_key_file)
    document["storage"]["secret_access_key_file"] = str(storage_secret_file)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(document), encoding="utf-8")
    environment = {devstack.ACCESS_KEY_ENV: seaweedfs.access_key_id}
    daemon = Daemon(config, environment, tmp_path / "daemon.log")
    for variable in (devstack.API_KEY_ENV, devstack.SECRET_KEY_ENV):
        daemon.env.pop(variable, None)  # the files are the only source

    checked = daemon.cli("check", check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.startswith(
        f"warning  {config}: at 'speechkit.api_key_file': {api_key_file} holds a secret and "
        "every user of this machine can read it (mode 0644)"
    )
    with daemon.start():
        (inbox / "call.ogg").write_bytes(read_fixture("mono.ogg"))
        text, _ = done_outputs(inbox, "call")
        assert text == MONO_TXT
        assert daemon.stop() == 0
    log = daemon.log()
    assert f"{api_key_file} holds a secret and every user of this machine can read it" in log
    assert str(storage_secret_file) not in log  # mode 0600: nothing to warn about
    places = everything_a_user_can_see(
        daemon, [inbox], tmp_path / "state", [checked.stdout, checked.stderr]
    )
    assert_no_secret_anywhere(
        places,
        {
            "API key": api_key,
            "storage secret": seaweedfs.secret_access_key,
            "storage key id": seaweedfs.access_key_id,
        },
    )
    assert wait_for(lambda: seaweedfs.list_keys(bucket=bucket) == [], "the bucket to empty")
