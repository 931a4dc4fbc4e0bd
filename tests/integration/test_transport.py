"""daemon.transport against real HTTP servers on loopback: answers, failures that say whether
the request left, proxies and NO_PROXY from the environment, the CA bundle variables."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import certifi
import pytest

from daemon import transport
from tests.loopback import Recorder, Server, clear_proxies, closed_port, serve


class _Recorder(Recorder):
    """Answers every request with 200 and a JSON body naming what it saw; `/slow` stalls."""

    def _answer(self) -> None:
        self.record()
        if self.path.endswith("/slow"):
            time.sleep(1.5)
        status = 200 if not self.path.endswith("/missing") else 404
        self.reply(status, b'{"ok": true}',
                   {"Content-Type": "application/json", "X-Request-Id": "abc"})  # fmt: skip

    do_GET = do_POST = do_PUT = _answer  # noqa: N815 - http.server's names


@pytest.fixture
def server() -> Iterator[Server]:
    with serve(_Recorder) as served:
        yield served


@pytest.fixture(autouse=True)
def _no_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    clear_proxies(monkeypatch, "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "AWS_CA_BUNDLE")


def test_a_request_sends_method_headers_body_and_reads_the_whole_answer(server: Server) -> None:
    url, seen = server
    answer = transport.Transport().request(
        "POST", f"{url}/v1/op?x=1", headers={"Authorization": "Api-Key k"}, body=b'{"a": 1}',
        timeout=5,
    )  # fmt: skip
    assert answer.status_code == 200
    assert answer.json() == {"ok": True}
    assert answer.headers["x-request-id"] == "abc"  # case-insensitive, as the callers read it
    assert answer.url == f"{url}/v1/op?x=1"
    method, path, headers, body = seen[0]
    assert (method, path, body) == ("POST", "/v1/op?x=1", b'{"a": 1}')
    assert headers["Authorization"] == "Api-Key k"


def test_connections_are_kept_alive_between_requests(server: Server) -> None:
    url, seen = server
    client = transport.Transport()
    for _ in range(3):
        assert client.request("GET", f"{url}/a", headers={}, timeout=5).status_code == 200
    manager = client._manager_for(url)
    pool = manager.connection_from_url(url)
    assert pool.num_connections == 1  # one connection served all three
    assert len(seen) == 3


def test_an_error_status_is_an_answer_not_an_exception(server: Server) -> None:
    url, _ = server
    answer = transport.Transport().request("GET", f"{url}/missing", headers={}, timeout=5)
    assert answer.status_code == 404
    assert answer.reason == "Not Found"


def test_a_refused_connection_was_not_sent() -> None:
    port = closed_port()
    with pytest.raises(transport.TransportError) as caught:
        transport.Transport().request("POST", f"http://127.0.0.1:{port}/x", headers={},
                                      body=b"{}", timeout=2)  # fmt: skip
    assert caught.value.sent is False
    assert caught.value.reason == "connection refused"


def test_a_read_timeout_may_have_been_sent(server: Server) -> None:
    url, seen = server
    with pytest.raises(transport.TransportError) as caught:
        transport.Transport().request("POST", f"{url}/slow", headers={}, body=b"{}", timeout=0.3)
    assert caught.value.sent is True  # the server has it: a submission may exist
    assert caught.value.timed_out is True
    assert caught.value.reason == "timed out"
    assert len(seen) == 1  # and it was not sent again


def test_a_proxy_from_the_environment_carries_the_request_with_its_credentials(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy_url, seen = server  # the recorder plays the proxy: it sees the absolute URL
    monkeypatch.setenv("HTTP_PROXY", proxy_url.replace("http://", "http://user:p%40ss@"))
    answer = transport.Transport().request(
        "GET", "http://speechkit.invalid/operations/1", headers={}, timeout=5
    )
    assert answer.status_code == 200
    method, path, headers, _ = seen[0]
    assert (method, path) == ("GET", "http://speechkit.invalid/operations/1")
    lowered = {name.lower(): value for name, value in headers.items()}
    assert lowered["proxy-authorization"] == "Basic dXNlcjpwQHNz"  # user:p@ss


def test_no_proxy_sends_a_host_direct(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    url, seen = server
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")
    answer = transport.Transport().request("GET", f"{url}/direct", headers={}, timeout=5)
    assert answer.status_code == 200
    assert seen[0][1] == "/direct"  # an origin-form path: no proxy in between


def test_an_unreachable_proxy_means_nothing_was_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{closed_port()}")
    with pytest.raises(transport.TransportError) as caught:
        transport.Transport().request("POST", "http://speechkit.invalid/x", headers={},
                                      body=b"{}", timeout=2)  # fmt: skip
    assert caught.value.sent is False


class _TunnelProxy(Recorder):
    """A proxy that never opens a tunnel: how it fails is told by the host asked for."""

    def do_CONNECT(self) -> None:  # noqa: N802 - http.server's name
        self.record()
        host = self.path.partition(".")[0]
        self.close_connection = True
        if host == "close":
            return  # hangs up without a word
        if host == "silent":
            time.sleep(1.5)  # no answer within the client's timeout
            return
        self.reply({"refuse": 403, "auth": 407, "gateway": 502}[host])


@pytest.mark.parametrize(
    ("host", "reason"),
    [
        ("refuse", "the proxy refused the tunnel (403 Forbidden)"),
        ("auth", "the proxy wants credentials (407 Proxy Authentication Required)"),
        ("gateway", "the proxy could not reach the server (502 Bad Gateway)"),
        ("close", None),
        ("silent", "timed out"),
    ],
)
def test_a_tunnel_the_proxy_does_not_open_means_nothing_was_sent(
    monkeypatch: pytest.MonkeyPatch, host: str, reason: str | None
) -> None:
    with serve(_TunnelProxy) as (proxy_url, seen):
        monkeypatch.setenv("HTTPS_PROXY", proxy_url)
        with pytest.raises(transport.TransportError) as caught:
            transport.Transport().request(
                "POST", f"https://{host}.invalid/x", headers={}, body=b"{}", timeout=0.5
            )
    assert caught.value.sent is False  # a submission cannot have reached the service
    if reason is not None:
        assert caught.value.reason == reason
    assert caught.value.timed_out is (host == "silent")
    assert [request[:2] for request in seen] == [("CONNECT", f"{host}.invalid:443")]


def test_the_ca_bundle_comes_from_the_variables_the_caller_names(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bundle = tmp_path / "corporate.pem"
    bundle.write_bytes(Path(certifi.where()).read_bytes())
    assert transport.Transport()._ca_bundle == certifi.where()
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))
    assert transport.Transport()._ca_bundle == str(bundle)
    assert (
        transport.Transport(ca_variables=transport.BOTOCORE_CA_VARIABLES)._ca_bundle
        == certifi.where()
    )
    monkeypatch.setenv("AWS_CA_BUNDLE", str(bundle))
    assert transport.Transport(ca_variables=transport.BOTOCORE_CA_VARIABLES)._ca_bundle == str(
        bundle
    )
