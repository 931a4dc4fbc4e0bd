"""The test S3 proxy: transparent for signed requests and presigned links, refuses on demand."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from daemon import config, storage
from speechkit_local import devstack
from tests.s3proxy import S3Proxy


@pytest.fixture
def proxy(seaweedfs: devstack.SeaweedFS) -> Iterator[S3Proxy]:
    with S3Proxy(seaweedfs.endpoint_url) as running:
        yield running


def store_through(
    proxy: S3Proxy, seaweedfs: devstack.SeaweedFS, bucket: str
) -> storage.ObjectStore:
    return storage.ObjectStore(
        config.Storage(
            bucket=bucket,
            access_key_id=config.Secret(seaweedfs.access_key_id),
            secret_access_key=config.Secret(seaweedfs.secret_access_key),
            endpoint_url=proxy.url,
            region=seaweedfs.region,
        )
    )


def test_signed_requests_and_presigned_links_pass_through(
    proxy: S3Proxy, seaweedfs: devstack.SeaweedFS, bucket: str, tmp_path: Path
) -> None:
    data = b"OggS" + bytes(range(256)) * 40
    audio = tmp_path / "a.ogg"
    audio.write_bytes(data)
    store = store_through(proxy, seaweedfs, bucket)
    digest = hashlib.sha256(data).hexdigest()
    assert store.upload(audio, "speechkit-watch/a.ogg", len(data), digest) is True
    # HEAD keeps its Content-Length and our metadata
    assert store.exists("speechkit-watch/a.ogg", len(data), digest)
    link = store.audio_uri("speechkit-watch/a.ogg")
    assert link.startswith(proxy.url + "/")
    assert requests.get(link, timeout=10).content == data
    assert store.list_keys() == ["speechkit-watch/a.ogg"]
    store.delete("speechkit-watch/a.ogg")
    assert seaweedfs.list_keys(bucket=bucket) == []
    assert proxy.refused == []


def test_a_refused_method_gets_access_denied_and_never_reaches_storage(
    proxy: S3Proxy, seaweedfs: devstack.SeaweedFS, bucket: str, tmp_path: Path
) -> None:
    audio = tmp_path / "a.ogg"
    audio.write_bytes(b"OggS")
    store = store_through(proxy, seaweedfs, bucket)
    store.upload(audio, "speechkit-watch/a.ogg", 4, hashlib.sha256(b"OggS").hexdigest())
    proxy.refuse("DELETE")
    with pytest.raises(storage.StorageError, match=r"AccessDenied \(HTTP 403\)") as refused:
        store.delete("speechkit-watch/a.ogg")
    assert refused.value.auth
    assert seaweedfs.list_keys(bucket=bucket) == ["speechkit-watch/a.ogg"]
    assert proxy.refused == [f"DELETE /{bucket}/speechkit-watch/a.ogg"]
    proxy.refuse()
    store.delete("speechkit-watch/a.ogg")
    assert seaweedfs.list_keys(bucket=bucket) == []
