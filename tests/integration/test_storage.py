"""The object storage adapter against a real SeaweedFS (SigV4 enforced)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import requests

from daemon import config, storage
from speechkit_local import devstack


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


def test_object_key_comes_from_the_content_hash() -> None:
    assert storage.object_key("p/", "ab" * 32) == "p/" + "ab" * 32 + ".ogg"
    assert storage.without_query("http://h/b/k?X-Amz-Signature=s") == "http://h/b/k"
    assert storage.plain_url("http://h:1/", "b", "p/a b.ogg") == "http://h:1/b/p/a%20b.ogg"


def test_upload_is_idempotent_and_presigned_link_reads_it_back(
    seaweedfs: devstack.SeaweedFS, bucket: str, tmp_path: Path
) -> None:
    data = b"OggS" + bytes(range(256)) * 40
    audio = tmp_path / "a.ogg"
    audio.write_bytes(data)
    store = storage.ObjectStore(settings(seaweedfs, bucket))
    digest = hashlib.sha256(data).hexdigest()
    key = store.key_for(digest)
    assert store.upload(audio, key, len(data), digest) is True
    assert store.upload(audio, key, len(data), digest) is True  # small: sent again, not asked
    link = store.audio_uri(key)
    assert "X-Amz-Signature" in link
    assert requests.get(link, timeout=10).content == data
    assert store.list_keys() == [key]
    store.delete(key)
    store.delete(key)  # deleting twice is fine
    assert store.list_keys() == []
    assert store.upload(audio, key, len(data), digest)
    assert store.delete_many([key, store.key_for("00" * 32)]) == []  # one request; gone is fine
    assert store.list_keys() == []


def test_a_small_put_goes_without_expect_and_parts_keep_it(
    seaweedfs: devstack.SeaweedFS, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One PUT of bytes in memory skips `Expect: 100-continue` (a round trip, and an interim
    answer botocore reads a byte per system call); multipart parts keep it."""
    monkeypatch.setattr(storage, "MULTIPART_THRESHOLD", 5 * 1024 * 1024)
    monkeypatch.setattr(storage, "MULTIPART_CHUNK", 5 * 1024 * 1024)
    store = storage.ObjectStore(settings(seaweedfs, bucket))
    sent: list[tuple[str, object]] = []

    def note(request: object, event_name: str, **_: object) -> None:
        headers = getattr(request, "headers", {})
        sent.append((event_name.rsplit(".", 1)[-1], headers.get("Expect")))

    store.client.meta.events.register("before-send.s3", note)
    for name, data in [("small.ogg", b"OggS" * 1000), ("big.ogg", bytes(range(256)) * 4096 * 6)]:
        audio = tmp_path / name
        audio.write_bytes(data)
        digest = hashlib.sha256(data).hexdigest()
        assert store.upload(audio, store.key_for(digest), len(data), digest)
    puts = [expect for operation, expect in sent if operation == "PutObject"]
    parts = [expect for operation, expect in sent if operation == "UploadPart"]
    assert puts == [None]
    assert len(parts) == 2
    assert all(expect in ("100-continue", b"100-continue") for expect in parts)


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


def test_wrong_secret_is_reported_as_an_auth_problem(
    seaweedfs: devstack.SeaweedFS, bucket: str, tmp_path: Path
) -> None:
    audio = tmp_path / "a.ogg"
    audio.write_bytes(b"OggS")
    store = storage.ObjectStore(
        settings(seaweedfs, bucket, secret_access_key=config.Secret("wrong-secret"))
    )
    with pytest.raises(storage.StorageError) as caught:
        store.upload(audio, "speechkit-watch/a.ogg", 4, hashlib.sha256(b"OggS").hexdigest())
    assert caught.value.auth
    assert "wrong-secret" not in str(caught.value)


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
    assert "unreachable" in str(caught.value)


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
    data = b"OggS" + bytes(range(256)) * 40
    audio = tmp_path / "a.ogg"
    audio.write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    store = storage.ObjectStore(settings(seaweedfs, bucket))
    key = store.key_for(digest)
    # Same size, other bytes, no hash of ours: what an older version or another tool left there.
    seaweedfs.client().put_object(Bucket=bucket, Key=key, Body=data[::-1])
    assert not store.exists(key, len(data), digest)
    assert store.upload(audio, key, len(data), digest) is True
    body = seaweedfs.client().get_object(Bucket=bucket, Key=key)["Body"].read()
    assert body == data
    store.delete(key)
