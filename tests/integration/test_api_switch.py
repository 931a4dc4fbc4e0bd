"""Operations of one API while the config names the other (`speechkit.api` changed with files in
flight), and the v3 URL a status check names: the real steps, state file, local server and
SeaweedFS, driven one step at a time."""

from __future__ import annotations

import contextlib
import http.server
import json
import logging
import random
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon import config, gate, state
from daemon.speechkit import Malformed, Running, backends
from daemon.speechkit.v2 import RecognitionClient, V2Backend
from daemon.speechkit.v3 import V3Backend, V3Client
from daemon.steps import Context, Steps, sha256_file
from daemon.storage import ObjectStore
from speechkit_local import LocalSpeechKit, devstack
from tests.e2e.test_pipeline import MONO_TXT
from tests.fixtures_audio import fixture_path

WAIT_LIMIT_SECONDS = 20.0  # a safety net against a broken server, never a timing assertion


def settings_for(
    tmp_path: Path, speechkit: LocalSpeechKit, seaweedfs: devstack.SeaweedFS, api_key: str,
    bucket: str | None, **speechkit_keys: Any,
) -> config.Config:  # fmt: skip
    """A config of the local stack; without storage when `bucket` is None."""
    document = devstack.daemon_config(
        watch_dirs=[tmp_path / "inbox"], storage=seaweedfs, speechkit_url=speechkit.url,
        state_file=tmp_path / "state.db", bucket=bucket,
        extra={"speechkit": {"stt_v3_url": speechkit.stt_v3_url, **speechkit_keys}},
    )  # fmt: skip
    if bucket is None:
        del document["storage"]
    environ = devstack.daemon_env(seaweedfs, api_key)
    return config.parse(document, source=tmp_path / "config.yaml", environ=environ)


def done(backend: V2Backend | V3Backend, operation_id: str) -> Any:
    deadline = time.monotonic() + WAIT_LIMIT_SECONDS
    while time.monotonic() < deadline:
        status = backend.status(operation_id)
        if not isinstance(status, Running):
            return status
        time.sleep(0.05)
    raise AssertionError(f"operation {operation_id} never finished")


def pending_row(
    store: state.Store, audio: Path, specification: dict[str, Any], operation_id: str, key: str
) -> int:
    found = audio.stat()
    row_id = store.add_version(path=str(audio), folder=str(audio.parent), size=found.st_size,
                               mtime_ns=found.st_mtime_ns, now=time.time())  # fmt: skip
    store.update(
        row_id, time.time(), state=state.PENDING, sha256=sha256_file(audio), duration_seconds=4.0,
        channels=1, specification=json.dumps(specification, sort_keys=True), object_key=key,
        operation_id=operation_id, submitted_at=time.time(), due_at=time.time(),
    )  # fmt: skip
    return row_id


class _WebPage(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(404)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(b"<html>Not Found</html>")

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


@contextlib.contextmanager
def not_the_api() -> Iterator[str]:
    """The URL of a web server that is not the API (it answers every GET with an HTML 404)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _WebPage)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/stt/v3"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def steps_for(settings: config.Config, store: state.Store) -> Steps:
    apis = backends.Backends(settings.speechkit)
    objects = None if settings.storage is None else ObjectStore(settings.storage)
    return Steps(Context(
        settings, store, objects, apis.configured, clock=time.time, rng=random.Random(1),
        stopping=threading.Event(), on_changed=lambda path: None, other_api=apis.for_api,
    ))  # fmt: skip


def test_a_v2_operation_is_read_with_v2_after_the_config_moved_to_v3(
    tmp_path: Path, speechkit: LocalSpeechKit, seaweedfs: devstack.SeaweedFS, bucket: str,
    api_key: str,
) -> None:  # fmt: skip
    (tmp_path / "inbox").mkdir()
    audio = tmp_path / "inbox" / "old.ogg"
    shutil.copy(fixture_path("mono.ogg"), audio)
    settings = settings_for(tmp_path, speechkit, seaweedfs, api_key, bucket, api="v3")
    assert settings.storage is not None
    objects = ObjectStore(settings.storage)
    key = objects.key_for(sha256_file(audio))
    objects.upload(audio, key, audio.stat().st_size, sha256_file(audio), None)
    v2 = V2Backend(RecognitionClient(settings.speechkit))
    specification = settings.watch[0].recognition.settings("v2", 1)
    operation_id = v2.submit(objects.audio_uri(key), specification)  # before the change
    done(v2, operation_id)
    v2.close()
    store = state.Store(settings.state_file)
    row_id = pending_row(store, audio, specification, operation_id, key)
    steps = steps_for(settings, store)
    steps.checking.check(store.get(row_id))
    row = store.get(row_id)
    assert (row.state, row.operation_id, row.submissions) == (state.DONE, operation_id, 0)
    assert (tmp_path / "inbox" / "old.txt").read_text(encoding="utf-8") == MONO_TXT
    saved = json.loads((tmp_path / "inbox" / "old.json").read_text(encoding="utf-8"))
    assert saved["response"]["@type"].endswith("LongRunningRecognitionResponse")
    assert speechkit.stats()["submissions"] == 1  # not submitted again as v3
    steps.context.api.close()
    store.close()


def test_v2_takes_a_v3_answer_for_malformed_and_a_wrong_v3_url_pauses_its_own_key(
    tmp_path: Path, speechkit: LocalSpeechKit, seaweedfs: devstack.SeaweedFS, api_key: str,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    (tmp_path / "inbox").mkdir()
    audio = tmp_path / "inbox" / "call.ogg"
    shutil.copy(fixture_path("mono.ogg"), audio)
    settings = settings_for(tmp_path, speechkit, seaweedfs, api_key, None, api="v3")
    specification = settings.watch[0].recognition.settings("v3", 1)
    v3 = V3Backend(V3Client(settings.speechkit))
    operation_id = v3.submit(audio, specification)
    done(v3, operation_id)
    v3.close()
    # Read by v2 (as a v2 daemon read a v3 operation): its `google.protobuf.Empty` response is
    # no result, never an empty transcript.
    v2 = V2Backend(RecognitionClient(settings.speechkit))
    status = v2.status(operation_id)
    v2.close()
    assert isinstance(status, Malformed)
    assert "google.protobuf.Empty, not API v2's result" in status.problem
    # getRecognition at a URL that is not the API (a web page's 404): the pause and the log
    # name stt_v3_url, not operations_url.
    with not_the_api() as elsewhere:
        wrong = settings_for(tmp_path, speechkit, seaweedfs, api_key, None, api="v3",
                             stt_v3_url=elsewhere)  # fmt: skip
        store = state.Store(wrong.state_file)
        row_id = pending_row(store, audio, specification, operation_id, f"inline:{'0' * 64}")
        steps = steps_for(wrong, store)
        with caplog.at_level(logging.ERROR, logger="daemon.gate"):
            steps.checking.check(store.get(row_id))
    assert store.get(row_id).state == state.PENDING
    assert steps.gate.pauses[gate.STT_V3_URL].paused()
    assert not steps.gate.pauses[gate.OPERATIONS_URL].paused()
    assert "check speechkit.stt_v3_url" in caplog.text
    assert elsewhere in caplog.text
    steps.context.api.close()
    store.close()
