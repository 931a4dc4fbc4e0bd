"""The object storage adapter against a real SeaweedFS (SigV4 enforced)."""

from __future__ import annotations

import hashlib
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import botocore.auth
import pytest
import requests

from daemon import config, storage, transport
from speechkit_local import devstack
from tests.loopback import TunnelRefusingProxy, clear_proxies, serve
from tests.s3proxy import S3Proxy


def settings(seaweedfs: devstack.SeaweedFS, bucket: str, **overrides: object) -> config.Storage:
    values: dict[str, object] = {
        "bucket": bucket,
        "access_key_id": config.Secret(seaweedfs.access_key_id),
        "secret_access_key": config.Secret(seaweedfs.secret_access_key),
        "endpoint_url": seaweedfs.endpoint_url,
        "region": seaweedfs.region,
        **overrides,
    }
    return config.Storage(**values)  # type: ignore[arg-type]


SMALL = b"OggS" + bytes(range(256)) * 40  # under the multipart threshold: one PUT


def small_file(tmp_path: Path) -> Path:
    """`a.ogg` holding SMALL."""
    audio = tmp_path / "a.ogg"
    audio.write_bytes(SMALL)
    return audio


def test_object_key_comes_from_the_content_hash() -> None:
    assert storage.object_key("p/", "ab" * 32) == "p/" + "ab" * 32 + ".ogg"
    assert storage.without_query("http://h/b/k?X-Amz-Signature=s") == "http://h/b/k"
    assert storage.plain_url("http://h:1/", "b", "p/a b.ogg") == "http://h:1/b/p/a%20b.ogg"


def test_upload_is_idempotent_and_presigned_link_reads_it_back(
    seaweedfs: devstack.SeaweedFS, bucket: str, tmp_path: Path
) -> None:
    audio = small_file(tmp_path)
    store = storage.ObjectStore(settings(seaweedfs, bucket))
    digest = hashlib.sha256(SMALL).hexdigest()
    key = store.key_for(digest)
    assert store.upload(audio, key, len(SMALL), digest) is True
    assert store.upload(audio, key, len(SMALL), digest) is True  # small: sent again, not asked
    link = store.audio_uri(key)
    assert "X-Amz-Signature" in link
    assert requests.get(link, timeout=10).content == SMALL
    assert store.list_keys() == [key]
    store.delete(key)
    store.delete(key)  # deleting twice is fine
    assert store.list_keys() == []
    assert store.upload(audio, key, len(SMALL), digest)
    assert store.delete_many([key, store.key_for("00" * 32)]) == []  # one request; gone is fine
    assert store.list_keys() == []


def test_a_small_put_goes_without_expect_and_parts_keep_it(
    seaweedfs: devstack.SeaweedFS, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One PUT of bytes in memory, signed by botocore over our transport, skips
    `Expect: 100-continue` (a round trip) and signs what boto3's put_object signs; multipart
    parts (boto3) keep it."""
    monkeypatch.setattr(storage, "MULTIPART_THRESHOLD", 5 * 1024 * 1024)
    monkeypatch.setattr(storage, "MULTIPART_CHUNK", 5 * 1024 * 1024)
    store = storage.ObjectStore(settings(seaweedfs, bucket))
    direct = spy_on_puts(store, monkeypatch)
    through_boto3: list[tuple[str, object]] = []

    def note(request: object, event_name: str, **_: object) -> None:
        headers = getattr(request, "headers", {})
        through_boto3.append((event_name.rsplit(".", 1)[-1], headers.get("Expect")))

    store.client.meta.events.register("before-send.s3", note)
    small = b"OggS" * 1000
    for name, data in [("small.ogg", small), ("big.ogg", bytes(range(256)) * 4096 * 6)]:
        audio = tmp_path / name
        audio.write_bytes(data)
        digest = hashlib.sha256(data).hexdigest()
        assert store.upload(audio, store.key_for(digest), len(data), digest)
    assert len(direct) == 1
    headers = {name.lower(): value for name, value in direct[0].items()}
    assert "expect" not in headers
    assert headers["content-length"] == str(len(small))
    assert headers["x-amz-content-sha256"] == hashlib.sha256(small).hexdigest()
    assert headers["authorization"].startswith(
        f"AWS4-HMAC-SHA256 Credential={seaweedfs.access_key_id}/"
    )
    assert (
        "SignedHeaders=content-type;host;x-amz-content-sha256;x-amz-date;x-amz-meta-sha256,"
        in headers["authorization"]
    )
    assert [operation for operation, _ in through_boto3 if operation == "PutObject"] == []
    parts = [expect for operation, expect in through_boto3 if operation == "UploadPart"]
    assert len(parts) == 2
    assert all(expect in ("100-continue", b"100-continue") for expect in parts)


def spy_on_puts(
    store: storage.ObjectStore, monkeypatch: pytest.MonkeyPatch
) -> list[dict[str, str]]:
    """The headers of every request the store sends through its transport (its small PUTs)."""
    sent: list[dict[str, str]] = []
    request = store.transport.request

    def recorded(method: str, url: str, **options: Any) -> transport.Response:
        assert method == "PUT"
        sent.append(dict(options["headers"]))
        return request(method, url, **options)

    monkeypatch.setattr(store.transport, "request", recorded)
    return sent


def test_a_small_upload_lands_with_its_bytes_type_and_hash(
    seaweedfs: devstack.SeaweedFS, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = b"OggS" + bytes(range(256)) * 400
    audio = tmp_path / "a.ogg"
    audio.write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()

    def hashed_again(*_: object) -> str:
        raise AssertionError("the signer hashed the body again")

    # The payload's hash is the one computed to name the object: botocore does not redo it.
    store = storage.ObjectStore(settings(seaweedfs, bucket))
    key = store.key_for(digest)
    progress: list[int] = []
    with monkeypatch.context() as patched:
        patched.setattr(botocore.auth.SigV4Auth, "payload", hashed_again)
        assert store.upload(audio, key, len(data), digest, progress.append)
    assert progress == [len(data)]
    client = seaweedfs.client()
    head = client.head_object(Bucket=bucket, Key=key)
    assert head["ContentLength"] == len(data)
    assert head["ContentType"] == "audio/ogg"
    assert head["Metadata"] == {storage.HASH_METADATA: digest}
    assert client.get_object(Bucket=bucket, Key=key)["Body"].read() == data
    assert store.exists(key, len(data), digest)


AWKWARD_KEY = "speechkit-watch/a b+c%20d é 日本~(1)&x=y.ogg"


def test_a_key_with_awkward_characters_uploads_and_its_link_reads_it_back(
    seaweedfs: devstack.SeaweedFS, bucket: str, tmp_path: Path
) -> None:
    audio = small_file(tmp_path)
    store = storage.ObjectStore(settings(seaweedfs, bucket))
    assert store.upload(audio, AWKWARD_KEY, len(SMALL), hashlib.sha256(SMALL).hexdigest())
    assert seaweedfs.list_keys(bucket=bucket) == [AWKWARD_KEY]
    head = seaweedfs.client().head_object(Bucket=bucket, Key=AWKWARD_KEY)
    assert head["Metadata"] == {storage.HASH_METADATA: hashlib.sha256(SMALL).hexdigest()}
    assert requests.get(store.audio_uri(AWKWARD_KEY), timeout=10).content == SMALL


def test_the_presigned_link_is_the_one_boto3_makes(
    seaweedfs: devstack.SeaweedFS, bucket: str, tmp_path: Path
) -> None:
    """Same signer, same request: at the same second, the same URL, byte for byte."""
    data = b"OggS" * 100
    audio = tmp_path / "a.ogg"
    audio.write_bytes(data)
    store = storage.ObjectStore(settings(seaweedfs, bucket, presign_seconds=7200))
    assert store.upload(audio, AWKWARD_KEY, len(data), hashlib.sha256(data).hexdigest())
    for _ in range(5):  # the two must be made within one second (X-Amz-Date) to be equal
        ours = store.audio_uri(AWKWARD_KEY)
        boto3s = store.client.generate_presigned_url(
            "get_object", Params={"Bucket": bucket, "Key": AWKWARD_KEY}, ExpiresIn=7200
        )
        if amz_date(ours) == amz_date(boto3s):
            break
    assert ours == boto3s
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(ours).query)
    assert sorted(query) == [
        "X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires",
        "X-Amz-Signature", "X-Amz-SignedHeaders",
    ]  # fmt: skip
    assert query["X-Amz-Expires"] == ["7200"]
    assert query["X-Amz-SignedHeaders"] == ["host"]
    assert requests.get(ours, timeout=10).content == data
    assert seaweedfs.secret_access_key not in ours


def amz_date(url: str) -> list[str]:
    return urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)["X-Amz-Date"]


def test_plain_link_is_the_path_style_object_url(
    seaweedfs: devstack.SeaweedFS, bucket: str
) -> None:
    store = storage.ObjectStore(settings(seaweedfs, bucket, link="plain"))
    assert store.audio_uri("speechkit-watch/x.ogg") == (
        f"{seaweedfs.endpoint_url}/{bucket}/speechkit-watch/x.ogg"
    )


def test_multipart_upload_of_a_large_file(
    seaweedfs: devstack.SeaweedFS, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(storage, "MULTIPART_THRESHOLD", 5 * 1024 * 1024)
    monkeypatch.setattr(storage, "MULTIPART_CHUNK", 5 * 1024 * 1024)
    data = bytes(range(256)) * (4096 * 12)  # 12 MiB: three parts
    audio = tmp_path / "big.ogg"
    audio.write_bytes(data)
    store = storage.ObjectStore(settings(seaweedfs, bucket))
    digest = hashlib.sha256(data).hexdigest()
    key = store.key_for(digest)
    sent: list[int] = []  # what the progress callback hears: every byte, once
    assert store.upload(audio, key, len(data), digest, sent.append)
    assert sum(sent) == len(data)
    head = seaweedfs.client().head_object(Bucket=bucket, Key=key)
    assert head["ContentLength"] == len(data)
    assert "-" in head["ETag"]  # a multipart ETag: "<md5 of md5s>-<parts>"
    assert not seaweedfs.client().list_multipart_uploads(Bucket=bucket).get("Uploads")
    assert store.upload(audio, key, len(data), digest) is False  # already there: not sent again


def test_a_proxy_refusing_the_tunnel_is_named_for_the_put_and_for_boto3(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    audio = tmp_path / "a.ogg"
    audio.write_bytes(b"OggS")
    behind_a_proxy = config.Storage(
        bucket="b", access_key_id=config.Secret("k"), secret_access_key=config.Secret("s"),
        endpoint_url="https://storage.invalid",
    )  # fmt: skip
    clear_proxies(monkeypatch)
    named = "storage unreachable: the proxy refused the tunnel (403 Forbidden)"
    with serve(TunnelRefusingProxy) as (proxy_url, seen):
        monkeypatch.setenv("HTTPS_PROXY", proxy_url)
        store = storage.ObjectStore(behind_a_proxy)
        with pytest.raises(storage.StorageError) as caught:
            store.upload(audio, "k.ogg", 4, hashlib.sha256(b"OggS").hexdigest())
        assert [request[:2] for request in seen] == [("CONNECT", "storage.invalid:443")]
        with pytest.raises(storage.StorageError) as listing:  # through boto3 (`check` lists)
            store.list_keys()
    assert str(caught.value) == named
    assert not caught.value.auth  # the proxy's 403, not the store's: the keys are not at fault
    assert str(listing.value) == named


@pytest.mark.parametrize(
    ("field", "wrong"), [("secret_access_key", "wrong-secret"), ("access_key_id", "AKNOBODYKNOWS")]
)
def test_a_wrong_key_is_reported_as_an_auth_problem_without_the_key(
    seaweedfs: devstack.SeaweedFS, bucket: str, tmp_path: Path, field: str, wrong: str
) -> None:
    audio = tmp_path / "a.ogg"
    audio.write_bytes(b"OggS")
    store = storage.ObjectStore(settings(seaweedfs, bucket, **{field: config.Secret(wrong)}))
    with pytest.raises(storage.StorageError) as caught:
        store.upload(audio, "speechkit-watch/a.ogg", 4, hashlib.sha256(b"OggS").hexdigest())
    assert caught.value.auth
    assert str(caught.value).startswith("storage refused the request: ")
    assert str(caught.value).endswith(" (HTTP 403)")
    assert wrong not in str(caught.value)


def test_unreachable_storage_is_a_transient_error(tmp_path: Path) -> None:
    audio = tmp_path / "a.ogg"
    audio.write_bytes(b"OggS")
    unreachable = config.Storage(
        bucket="b",
        access_key_id=config.Secret("k"),
        secret_access_key=config.Secret("s"),
        endpoint_url=f"http://127.0.0.1:{devstack.pick_ports()['s3.port']}",
    )
    with pytest.raises(storage.StorageError) as caught:
        storage.ObjectStore(unreachable).upload(
            audio, "k.ogg", 4, hashlib.sha256(b"OggS").hexdigest()
        )
    assert not caught.value.auth
    assert str(caught.value) == "storage unreachable: connection failed"


@pytest.fixture
def proxy(seaweedfs: devstack.SeaweedFS) -> Iterator[S3Proxy]:
    with S3Proxy(seaweedfs.endpoint_url) as running:
        yield running


def put_through(
    proxy: S3Proxy, seaweedfs: devstack.SeaweedFS, bucket: str, tmp_path: Path
) -> tuple[storage.ObjectStore, Path, str]:
    """A store behind the proxy, a small file, and its key."""
    audio = small_file(tmp_path)
    store = storage.ObjectStore(settings(seaweedfs, bucket, endpoint_url=proxy.url))
    return store, audio, store.key_for(hashlib.sha256(SMALL).hexdigest())


def upload(store: storage.ObjectStore, audio: Path, key: str) -> bool:
    data = audio.read_bytes()
    return store.upload(audio, key, len(data), hashlib.sha256(data).hexdigest())


def upload_failure(store: storage.ObjectStore, audio: Path, key: str) -> storage.StorageError:
    """The StorageError an upload ends with (the test fails if it succeeds)."""
    with pytest.raises(storage.StorageError) as caught:
        upload(store, audio, key)
    return caught.value


def test_a_5xx_is_sent_once_more_then_reported_as_transient(
    proxy: S3Proxy, seaweedfs: devstack.SeaweedFS, bucket: str, tmp_path: Path
) -> None:
    store, audio, key = put_through(proxy, seaweedfs, bucket, tmp_path)
    proxy.fail_next("PUT", 1)
    assert upload(store, audio, key)  # the quick retry got it there
    assert proxy.received["PUT"] == 2
    assert seaweedfs.list_keys(bucket=bucket) == [key]
    proxy.fail_next("PUT", 2)
    failure = upload_failure(store, audio, key)
    assert str(failure) == "storage refused the request: InternalError (HTTP 500)"
    assert not failure.auth
    assert proxy.received["PUT"] == 4  # two attempts, no more: the step's retry does the rest


def test_a_dropped_connection_is_sent_once_more_then_reported_as_transient(
    proxy: S3Proxy, seaweedfs: devstack.SeaweedFS, bucket: str, tmp_path: Path
) -> None:
    store, audio, key = put_through(proxy, seaweedfs, bucket, tmp_path)
    proxy.drop_next("PUT", 1)
    assert upload(store, audio, key)
    assert proxy.received["PUT"] == 2
    proxy.drop_next("PUT", 2)
    failure = upload_failure(store, audio, key)
    assert str(failure) == "storage request failed: ConnectionClosedError"
    assert not failure.auth
    assert proxy.received["PUT"] == 4


def test_a_refused_put_is_an_auth_problem_and_not_sent_again(
    proxy: S3Proxy, seaweedfs: devstack.SeaweedFS, bucket: str, tmp_path: Path
) -> None:
    store, audio, key = put_through(proxy, seaweedfs, bucket, tmp_path)
    proxy.refuse("PUT")
    failure = upload_failure(store, audio, key)
    assert str(failure) == "storage refused the request: AccessDenied (HTTP 403)"
    assert failure.auth
    assert proxy.refused == [f"PUT /{bucket}/{key}"]


def test_a_put_without_an_answer_in_time_is_a_timeout_and_not_sent_again(
    proxy: S3Proxy,
    seaweedfs: devstack.SeaweedFS,
    bucket: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(storage, "READ_TIMEOUT_SECONDS", 0.5)
    store, audio, key = put_through(proxy, seaweedfs, bucket, tmp_path)
    proxy.fail_next("PUT", 1, after_seconds=2.0)
    failure = upload_failure(store, audio, key)
    assert str(failure) == "storage unreachable: timed out"
    assert not failure.auth
    assert proxy.received["PUT"] == 1


def test_bytes_that_do_not_hash_to_their_key_are_deleted_and_never_used(
    seaweedfs: devstack.SeaweedFS, bucket: str, tmp_path: Path
) -> None:
    original = b"OggS" + bytes(range(256)) * 40
    audio = tmp_path / "a.ogg"
    audio.write_bytes(original)
    digest = hashlib.sha256(original).hexdigest()
    audio.write_bytes(original[::-1])  # rewritten in place, same size, before the upload
    store = storage.ObjectStore(settings(seaweedfs, bucket))
    key = store.key_for(digest)
    with pytest.raises(storage.ContentChangedError) as changed:
        store.upload(audio, key, len(original), digest)
    assert changed.value.sent_sha256 == hashlib.sha256(original[::-1]).hexdigest()
    assert not changed.value.left_behind
    assert seaweedfs.list_keys(bucket=bucket) == []


def test_an_object_of_unknown_origin_under_our_key_is_not_trusted(
    seaweedfs: devstack.SeaweedFS, bucket: str, tmp_path: Path
) -> None:
    audio = small_file(tmp_path)
    digest = hashlib.sha256(SMALL).hexdigest()
    store = storage.ObjectStore(settings(seaweedfs, bucket))
    key = store.key_for(digest)
    # Same size, other bytes, no hash of ours: what an older version or another tool left there.
    seaweedfs.client().put_object(Bucket=bucket, Key=key, Body=SMALL[::-1])
    assert not store.exists(key, len(SMALL), digest)
    assert store.upload(audio, key, len(SMALL), digest) is True
    body = seaweedfs.client().get_object(Bucket=bucket, Key=key)["Body"].read()
    assert body == SMALL
    store.delete(key)
