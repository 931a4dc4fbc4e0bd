"""`speechkit-watch check`: one line per probe, exit 0 only when the setup works.

Run as a user runs it, a subprocess against the real SeaweedFS and the local SpeechKit server,
with no daemon running.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

from speechkit_local import LocalSpeechKit, devstack
from tests.e2e.harness import Daemon, leftovers


def check(daemon: Daemon) -> subprocess.CompletedProcess[str]:
    return daemon.cli("check", check=False)


def lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return result.stdout.splitlines()


def problems(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in lines(result) if line.startswith("PROBLEM")]


def test_a_working_setup_passes_every_check_and_leaves_nothing_behind(
    make_daemon: Callable[..., Daemon],
    inbox: Path,
    tmp_path: Path,
    seaweedfs: devstack.SeaweedFS,
    bucket: str,
    speechkit: LocalSpeechKit,
) -> None:
    result = check(make_daemon())
    assert result.returncode == 0, result.stdout + result.stderr
    assert problems(result) == []
    report = lines(result)
    assert f"ok       watch folder {inbox} exists and is writable" in report
    state_file = tmp_path / "state" / "state.db"
    assert f"ok       state file {state_file} does not exist yet and can be created" in report
    assert (
        f"ok       storage: bucket {bucket} at {seaweedfs.endpoint_url} is reachable with our keys"
        in report
    )
    assert any(
        line.startswith(f"ok       storage: wrote the test object {devstack.STORAGE_PREFIX}")
        for line in report
    )
    assert "ok       storage: a presigned link to the test object can be fetched" in report
    assert "ok       storage: deleted the test object" in report
    assert (
        f"ok       credentials: the recognition API at {speechkit.operations_url} accepts "
        "speechkit.api_key" in report
    )
    assert seaweedfs.list_keys(bucket=bucket) == []
    assert leftovers(inbox) == []
    assert list(inbox.iterdir()) == []
    assert not state_file.exists()  # check never creates the state file


def test_a_wrong_storage_secret_is_named(make_daemon: Callable[..., Daemon]) -> None:
    daemon = make_daemon(env={devstack.SECRET_KEY_ENV: "not-the-secret-key"})
    result = check(daemon)
    assert result.returncode == 1
    assert problems(result) == [
        "PROBLEM  storage: the bucket refused our keys (SignatureDoesNotMatch): check "
        "storage.secret_access_key"
    ]
    assert any(line.startswith("ok       credentials:") for line in lines(result))
    assert "not-the-secret-key" not in result.stdout + result.stderr


def test_a_wrong_api_key_is_named(make_daemon: Callable[..., Daemon]) -> None:
    result = check(make_daemon(env={devstack.API_KEY_ENV: "AQVN-not-a-key-we-know"}))
    assert result.returncode == 1
    [problem] = problems(result)
    assert problem.startswith("PROBLEM  credentials: the recognition API refused speechkit.api_key")
    assert "HTTP 401" in problem
    assert "AQVN-not-a-key-we-know" not in result.stdout + result.stderr


def test_a_missing_watch_folder_is_named(
    make_daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    missing = tmp_path / "no-such-inbox"
    result = check(make_daemon(watch_dirs=[missing]))
    assert result.returncode == 1
    assert problems(result) == [
        f"PROBLEM  watch folder {missing} does not exist: create it, or fix watch[0].path"
    ]


def test_a_config_error_exits_2_before_any_probe(
    make_daemon: Callable[..., Daemon], seaweedfs: devstack.SeaweedFS, bucket: str
) -> None:
    result = check(make_daemon(speechkit={"metadata_service": True}))
    assert result.returncode == 2
    assert result.stdout == ""
    assert "set exactly one of api_key, iam_token, service_account_key_file" in result.stderr
    assert "(found api_key and metadata_service)" in result.stderr
