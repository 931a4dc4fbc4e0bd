"""A recording HTTP server on 127.0.0.1 for the transport tests: each test file gives the
handler (a Recorder: how it answers); the server records what each request carried. One handler
is shared: a proxy that refuses every tunnel."""

from __future__ import annotations

import contextlib
import http.server
import socket
import threading
from collections.abc import Iterator

import pytest

# (method, path, headers, body) of each request, in order.
Seen = list[tuple[str, str, dict[str, str], bytes]]
Server = tuple[str, Seen]
PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "HTTP_PROXY",
                   "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")  # fmt: skip


@contextlib.contextmanager
def serve(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[Server]:
    """Run `handler` (its class attribute `seen` is set to a fresh list) on a free port; its
    base URL and what it has seen."""
    seen: Seen = []
    recorder = type("Handler", (handler,), {"seen": seen})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), recorder)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", seen
    finally:
        httpd.shutdown()
        httpd.server_close()


def closed_port() -> int:
    """A local port nothing listens on (a refused connection)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def clear_proxies(monkeypatch: pytest.MonkeyPatch, *more: str) -> None:
    """No proxy (and none of `more`) from the environment the tests run in."""
    for name in (*PROXY_VARIABLES, *more):
        monkeypatch.delenv(name, raising=False)


class Recorder(http.server.BaseHTTPRequestHandler):
    """A handler that records each request (`record`) and answers with `reply`, keeping the
    connection open between requests, and logs nothing."""

    protocol_version = "HTTP/1.1"
    seen: Seen

    def record(self) -> bytes:
        """Read the request's body and add the request to `seen`; the body."""
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.seen.append((self.command, self.path, dict(self.headers), body))
        return body

    def reply(
        self, status: int, payload: bytes = b"", headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


class TunnelRefusingProxy(Recorder):
    """A proxy that answers every CONNECT with 403 (and records it)."""

    def do_CONNECT(self) -> None:
        self.record()
        self.reply(403)
