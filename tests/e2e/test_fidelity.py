"""Where the real service can differ from our local one: answers that are not the API, operations
the service forgets or ends in its own errors, and the cap on paid submissions.

The submission counts come from the local server's own counters, not from the daemon.
"""

from __future__ import annotations

import http.server
import shutil
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from speechkit_local import LocalSpeechKit
from tests.e2e.harness import Daemon, wait_for
from tests.e2e.test_pipeline import MONO_TXT, done_outputs
from tests.fixtures_audio import fixture_path

PAUSE_LINE = "get answers that are not the SpeechKit API"


class WrongEndpoint:
    """A loopback HTTP server that is not the API: a bare 404 page for every request, as a
    proxy or a mistyped URL answers. `forward_to` makes it pass requests on to the real API,
    as when an operator fixes the proxy."""

    def __init__(self) -> None:
        self.forward_to: str | None = None
        self.requests = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self._answer()

            def do_POST(self) -> None:
                self._answer()

            def _answer(self) -> None:
                outer.requests += 1
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                if outer.forward_to is not None:
                    upstream = requests.request(
                        self.command, outer.forward_to + self.path, data=body, timeout=10,
                        headers={name: value for name, value in self.headers.items()
                                 if name.lower() != "host"},
                    )  # fmt: skip
                    status, content = upstream.status_code, upstream.content
                    content_type = upstream.headers.get("Content-Type", "application/json")
                else:
                    status, content = 404, b"<html><body><h1>404 Not Found</h1></body></html>"
                    content_type = "text/html"
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, name="wrong-endpoint")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def wrong_endpoint() -> Iterator[WrongEndpoint]:
    endpoint = WrongEndpoint()
    endpoint.thread.start()
    try:
        yield endpoint
    finally:
        endpoint.close()


def failed_rows(daemon: Daemon) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = daemon.status()["failed"]
    return rows


def test_a_bare_404_on_status_checks_pauses_them_and_never_resubmits(
    make_daemon: Callable[..., Daemon],
    inbox: Path,
    speechkit: LocalSpeechKit,
    wrong_endpoint: WrongEndpoint,
) -> None:
    operations_url = wrong_endpoint.url + "/operations"
    daemon = make_daemon(speechkit={"operations_url": operations_url}, auth_retry_seconds=1)
    with daemon.start():
        shutil.copy(fixture_path("mono.ogg"), inbox / "call.ogg")
        wait_for(lambda: PAUSE_LINE in daemon.log(), "the pause of status checks")
        # Probed again every second, and still never submitted again.
        wait_for(lambda: wrong_endpoint.requests >= 3, "three probes of the wrong URL")
        assert speechkit.stats()["submissions"] == 1
        pause_lines = [line for line in daemon.log().splitlines() if PAUSE_LINE in line]
        assert len(pause_lines) == 1, pause_lines
        assert operations_url in pause_lines[0]
        assert "check speechkit.operations_url" in pause_lines[0]
        assert daemon.status()["counts"]["pending"] == 1
        # The proxy is fixed: the next probe gets through and the file finishes.
        wrong_endpoint.forward_to = speechkit.url
        assert done_outputs(inbox, "call")[0] == MONO_TXT
        assert "speechkit.operations_url answers as the SpeechKit API again" in daemon.log()
        assert daemon.stop() == 0
    assert speechkit.stats()["submissions"] == 1


def test_a_bare_404_on_submission_pauses_it_without_failing_the_file(
    make_daemon: Callable[..., Daemon],
    inbox: Path,
    speechkit: LocalSpeechKit,
    wrong_endpoint: WrongEndpoint,
) -> None:
    recognize_url = wrong_endpoint.url + "/speech/stt/v2/longRunningRecognize"
    daemon = make_daemon(speechkit={"recognize_url": recognize_url}, auth_retry_seconds=1)
    with daemon.start():
        shutil.copy(fixture_path("mono.ogg"), inbox / "call.ogg")
        wait_for(lambda: wrong_endpoint.requests >= 2, "two tries of the wrong URL")
        assert "submissions at " + recognize_url in daemon.log()
        assert daemon.status()["counts"]["failed"] == 0
        wrong_endpoint.forward_to = speechkit.url
        assert done_outputs(inbox, "call")[0] == MONO_TXT
        assert daemon.stop() == 0
    assert speechkit.stats()["submissions"] == 1


def test_an_operation_forgotten_again_and_again_is_submitted_three_times_then_fails(
    make_daemon: Callable[..., Daemon], inbox: Path, speechkit: LocalSpeechKit
) -> None:
    # Every result is forgotten the moment it is done: each status check gets the API's own
    # 404 with code 5, the one answer that means "submit again".
    speechkit.set_config(retention_seconds=0.0)
    with make_daemon().start() as daemon:
        shutil.copy(fixture_path("mono.ogg"), inbox / "lost.ogg")
        daemon.wait_for_count("failed", 1)
        assert speechkit.stats()["submissions"] == 3
        failed = failed_rows(daemon)
        assert failed[0]["submissions"] == 3
        reason = str(failed[0]["reason"])
        assert reason.startswith("submitted 3 times without a transcript")
        assert "is unknown to the service" in reason
        assert "speechkit-watch retry" in reason
        error = (inbox / "lost.error.json").read_text(encoding="utf-8")
        assert "submitted 3 times" in error
        text_status = daemon.cli("status").stdout
        assert "submitted 3 times" in text_status
        assert daemon.stop() == 0
    assert speechkit.stats()["submissions"] == 3


def test_an_operation_ending_in_the_services_own_error_is_submitted_again(
    make_daemon: Callable[..., Daemon], inbox: Path, speechkit: LocalSpeechKit
) -> None:
    speechkit.set_faults(operation_error_next=1, operation_error_code=13)
    with make_daemon().start() as daemon:
        shutil.copy(fixture_path("mono.ogg"), inbox / "flaky.ogg")
        text, _operation = done_outputs(inbox, "flaky")
        assert text == MONO_TXT
        assert "ended with the service's own error (code 13: Internal error)" in daemon.log()
        assert daemon.stop() == 0
    assert speechkit.stats()["submissions"] == 2
    assert not (inbox / "flaky.error.json").exists()


def test_an_operation_ending_in_invalid_argument_fails_at_once(
    make_daemon: Callable[..., Daemon], inbox: Path, speechkit: LocalSpeechKit
) -> None:
    speechkit.set_faults(operation_error_next=1, operation_error_code=3)
    with make_daemon().start() as daemon:
        shutil.copy(fixture_path("mono.ogg"), inbox / "bad.ogg")
        daemon.wait_for_count("failed", 1)
        assert "Invalid audio received" in str(failed_rows(daemon)[0]["reason"])
        assert daemon.stop() == 0
    assert speechkit.stats()["submissions"] == 1


@pytest.mark.parametrize("url_key", ["operations_url", "recognize_url"])
def test_check_names_a_url_that_is_not_the_api(
    make_daemon: Callable[..., Daemon],
    speechkit: LocalSpeechKit,
    wrong_endpoint: WrongEndpoint,
    url_key: str,
) -> None:
    path = urllib.parse.urlsplit(getattr(speechkit, url_key)).path
    wrong = wrong_endpoint.url + path
    result = make_daemon(speechkit={url_key: wrong}).cli("check", check=False)
    assert result.returncode == 1, result.stdout
    problems = [line for line in result.stdout.splitlines() if line.startswith("PROBLEM")]
    assert len(problems) == 1, result.stdout
    assert problems[0].startswith(f"PROBLEM  speechkit.{url_key}: {wrong} is not the SpeechKit API")
    assert "answered HTTP 404 without the API's error body" in problems[0]
    assert problems[0].endswith(f"check speechkit.{url_key}")


def test_check_probes_both_api_urls(
    make_daemon: Callable[..., Daemon], speechkit: LocalSpeechKit
) -> None:
    result = make_daemon().cli("check", check=False)
    assert result.returncode == 0, result.stdout
    report = result.stdout.splitlines()
    for url in (speechkit.operations_url, speechkit.recognize_url):
        assert f"ok       credentials: the recognition API at {url} accepts speechkit.api_key" in (
            report
        )
    assert speechkit.stats()["submissions"] == 0  # the probe of recognize_url creates nothing
