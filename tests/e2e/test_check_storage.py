"""`speechkit-watch check` against storage that refuses what a too-small role cannot do.

SeaweedFS grants its one key everything, so a loopback proxy in front of it (`tests.s3proxy`)
answers the refused requests with 403 AccessDenied, as Object Storage does for a service
account with `storage.uploader` (no delete) or without write rights.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import pytest

from daemon.checks import STATUS_WIDTH
from speechkit_local import devstack
from tests.e2e.harness import Daemon
from tests.e2e.test_check import check, lines
from tests.s3proxy import S3Proxy

PROBE_KEY = re.compile(
    re.escape(devstack.STORAGE_PREFIX) + r"speechkit-watch-check-[0-9a-f]{16}\.txt"
)


@pytest.fixture
def proxy(seaweedfs: devstack.SeaweedFS) -> Iterator[S3Proxy]:
    with S3Proxy(seaweedfs.endpoint_url) as running:
        yield running


def check_through(
    proxy: S3Proxy, make_daemon: Callable[..., Daemon], *, exit_code: int
) -> list[str]:
    """The report of `check` with storage reached through the proxy."""
    result = check(make_daemon(storage={"endpoint_url": proxy.url}))
    assert result.returncode == exit_code, result.stdout + result.stderr
    return lines(result)


def storage_lines(report: list[str]) -> list[str]:
    return [line for line in report if line[STATUS_WIDTH:].startswith("storage:")]


def test_storage_that_allows_everything_passes_write_link_and_delete(
    proxy: S3Proxy,
    make_daemon: Callable[..., Daemon],
    seaweedfs: devstack.SeaweedFS,
    bucket: str,
) -> None:
    report = check_through(proxy, make_daemon, exit_code=0)
    written = storage_lines(report)[1]
    assert written.startswith("ok       storage: wrote the test object ")
    assert PROBE_KEY.fullmatch(written.rsplit(" ", 1)[1])
    assert storage_lines(report) == [
        f"ok       storage: bucket {bucket} at {proxy.url} is reachable with our keys",
        written,
        "ok       storage: a presigned link to the test object can be fetched",
        "ok       storage: deleted the test object",
    ]
    assert seaweedfs.list_keys(bucket=bucket) == []
    assert proxy.refused == []


def test_a_refused_delete_names_the_role_and_the_test_object_left_behind(
    proxy: S3Proxy,
    make_daemon: Callable[..., Daemon],
    seaweedfs: devstack.SeaweedFS,
    bucket: str,
) -> None:
    proxy.refuse("DELETE")
    report = check_through(proxy, make_daemon, exit_code=1)
    [left_behind] = seaweedfs.list_keys(bucket=bucket)
    assert PROBE_KEY.fullmatch(left_behind)
    assert proxy.refused == [f"DELETE /{bucket}/{left_behind}"]
    assert storage_lines(report) == [
        f"ok       storage: bucket {bucket} at {proxy.url} is reachable with our keys",
        f"ok       storage: wrote the test object {left_behind}",
        "ok       storage: a presigned link to the test object can be fetched",
        "PROBLEM  storage: deleting the test object was refused (AccessDenied): give the "
        f"service account of storage.access_key_id the role storage.editor on bucket {bucket} "
        "(the daemon deletes each object after its result and sweeps orphans hourly; "
        f"storage.uploader cannot delete); the test object {left_behind} is left in bucket "
        f"{bucket}: delete it by hand",
    ]
    assert [line for line in report if line.startswith("PROBLEM")] == storage_lines(report)[-1:]
    assert any(line.startswith("ok       credentials:") for line in report)  # checks go on


def test_a_refused_write_names_the_role_and_writes_nothing(
    proxy: S3Proxy,
    make_daemon: Callable[..., Daemon],
    seaweedfs: devstack.SeaweedFS,
    bucket: str,
) -> None:
    proxy.refuse("PUT")
    report = check_through(proxy, make_daemon, exit_code=1)
    [refused_put] = proxy.refused
    key = refused_put.removeprefix(f"PUT /{bucket}/")
    assert PROBE_KEY.fullmatch(key)
    assert storage_lines(report) == [
        f"ok       storage: bucket {bucket} at {proxy.url} is reachable with our keys",
        f"PROBLEM  storage: writing the test object {key} was refused (AccessDenied): give the "
        f"service account of storage.access_key_id the role storage.editor on bucket {bucket} "
        "(the daemon uploads every file there)",
        "skip     storage: test object link and delete (it was not written)",
    ]
    assert seaweedfs.list_keys(bucket=bucket) == []
