"""A loopback HTTP proxy in front of the test S3 server, for faults SeaweedFS cannot make.

Every request goes on to SeaweedFS with its own request line, headers (the Host header too)
and body, so a SigV4 signature made for the proxy's address still verifies there; presigned
links made for the proxy work through it. Told to, it refuses every request of an HTTP method
with 403 AccessDenied, as Object Storage does when the keys' role lacks the permission
(`storage.uploader` and DELETE).

Told to, it also holds the next requests of a method for a while and then answers them with
500 InternalError, as a struggling store does: the client retries, and what it sends again
shows whether it re-reads a file that may have changed meanwhile. Or it reads the next
requests of a method and closes the connection without an answer, as a store (or a load
balancer) dropping a connection does.

The request body is sent on in one place (`_Handler.forward`): a bytes-per-second limit for
slow uploads belongs there when a test needs one.
"""

from __future__ import annotations

import collections
import contextlib
import http.client
import http.server
import socket
import threading
import time
import urllib.parse
from types import TracebackType
from typing import Self

LOOPBACK = "127.0.0.1"  # never bind to anything else
UPSTREAM_TIMEOUT_SECONDS = 30.0  # SeaweedFS on loopback answers in milliseconds
IDLE_TIMEOUT_SECONDS = 60.0  # a kept-alive client connection nobody closes ends by itself
STOP_TIMEOUT_SECONDS = 10.0  # threads end at once once their sockets are shut
ACCESS_DENIED = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b"<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>"
)
# Framing is ours toward the client: the upstream body arrives whole and goes out with a length.
NOT_FORWARDED_RESPONSE_HEADERS = frozenset({"connection", "keep-alive", "transfer-encoding"})
NO_BODY_STATUSES = frozenset({204, 304})
INTERNAL_ERROR = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b"<Error><Code>InternalError</Code><Message>We encountered an internal error.</Message>"
    b"</Error>"
)


class S3Proxy:
    """`with S3Proxy(seaweedfs.endpoint_url) as proxy:` then point a client at `proxy.url`."""

    def __init__(self, upstream_url: str) -> None:
        parsed = urllib.parse.urlsplit(upstream_url)
        if parsed.scheme != "http" or parsed.hostname is None or parsed.port is None:
            raise ValueError(f"upstream must be http://HOST:PORT, not {upstream_url!r}")
        self.upstream = (parsed.hostname, parsed.port)
        self.refused_methods: frozenset[str] = frozenset()
        self.refused: list[str] = []  # "METHOD /path" of every request answered with 403
        self.received: collections.Counter[str] = collections.Counter()  # requests per method
        self._failing: dict[str, int] = {}
        self._dropping: dict[str, int] = {}
        self._fail_after_seconds = 0.0
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the proxy has not been started")
        return f"http://{LOOPBACK}:{self._server.server_address[1]}"

    def refuse(self, *methods: str) -> None:
        """Answer every request of these methods with 403 AccessDenied; none: forward all."""
        self.refused_methods = frozenset(method.upper() for method in methods)

    def fail_next(self, method: str, count: int, *, after_seconds: float = 0.0) -> None:
        """Hold each of the next `count` requests of `method` for `after_seconds`, then answer
        500 InternalError without passing it on."""
        with self._lock:
            self._failing[method.upper()] = count
            self._fail_after_seconds = after_seconds

    def drop_next(self, method: str, count: int) -> None:
        """Read each of the next `count` requests of `method`, then close the connection
        without answering (nothing is passed on)."""
        with self._lock:
            self._dropping[method.upper()] = count

    def take_drop(self, method: str) -> bool:
        """True (and the request counted) when this request is to be dropped."""
        with self._lock:
            if self._dropping.get(method, 0) <= 0:
                return False
            self._dropping[method] -= 1
            self.received[method] += 1
            return True

    def take_failure(self, method: str) -> float | None:
        """Count a request; the seconds to hold it before failing it, or None to forward it."""
        with self._lock:
            self.received[method] += 1
            if self._failing.get(method, 0) <= 0:
                return None
            self._failing[method] -= 1
            return self._fail_after_seconds

    def record_refusal(self, line: str) -> None:
        with self._lock:
            self.refused.append(line)

    def start(self) -> Self:
        self._server = _Server((LOOPBACK, 0), self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="s3proxy", kwargs={"poll_interval": 0.05}
        )
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving, cut kept-alive client connections, and join every thread."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.shutdown()
        thread.join(STOP_TIMEOUT_SECONDS)
        server.cut_connections()
        server.server_close()  # joins the connection threads (block_on_close)
        self._server = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = False  # server_close() joins them: no thread outlives the proxy
    block_on_close = True

    def __init__(self, address: tuple[str, int], proxy: S3Proxy) -> None:
        self.proxy = proxy
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: socket.socket, client_address: object) -> None:  # type: ignore[override]
        with self.connections_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: socket.socket) -> None:  # type: ignore[override]
        with self.connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def cut_connections(self) -> None:
        """Wake connection threads waiting for a client's next request (keep-alive)."""
        with self.connections_lock:
            for connection in self.connections:
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as boto3 and requests expect
    timeout = IDLE_TIMEOUT_SECONDS
    server: _Server

    def do_GET(self) -> None:
        self.handle_any()

    def do_HEAD(self) -> None:
        self.handle_any()

    def do_PUT(self) -> None:
        self.handle_any()

    def do_POST(self) -> None:
        self.handle_any()

    def do_DELETE(self) -> None:
        self.handle_any()

    def handle_any(self) -> None:
        proxy = self.server.proxy
        body = self.read_body()
        if body is None:
            return
        if self.command in proxy.refused_methods:
            proxy.record_refusal(f"{self.command} {self.path}")
            self.answer(403, ACCESS_DENIED, content_type="application/xml")
            return
        if proxy.take_drop(self.command):
            self.close_connection = True  # no status line: the client sees the connection end
            return
        hold = proxy.take_failure(self.command)
        if hold is not None:
            time.sleep(hold)
            self.answer(500, INTERNAL_ERROR, content_type="application/xml")
            return
        try:
            status, reason, headers, payload = self.forward(body)
        except OSError as error:
            self.answer(502, f"s3proxy: upstream failed: {error}\n".encode())
            return
        self.send_response_only(status, reason)
        has_body = self.command != "HEAD" and status not in NO_BODY_STATUSES
        for name, value in headers:
            lowered = name.lower()
            if lowered in NOT_FORWARDED_RESPONSE_HEADERS or (
                lowered == "content-length" and has_body
            ):
                continue
            self.send_header(name, value)
        if has_body:
            self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if has_body:
            self.wfile.write(payload)

    def read_body(self) -> bytes | None:
        """The request body by its Content-Length; None (answered 501) if it is chunked."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            self.answer(501, b"s3proxy: chunked request bodies are not supported\n")
            return None
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def forward(self, body: bytes) -> tuple[int, str, list[tuple[str, str]], bytes]:
        """The same request to SeaweedFS, headers as received; its whole answer."""
        host, port = self.server.proxy.upstream
        upstream = http.client.HTTPConnection(host, port, timeout=UPSTREAM_TIMEOUT_SECONDS)
        try:
            upstream.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for name, value in self.headers.raw_items():
                upstream.putheader(name, value)
            upstream.endheaders(body or None)
            response = upstream.getresponse()  # skips an interim "100 Continue"
            payload = response.read()
            return response.status, response.reason, response.getheaders(), payload
        finally:
            upstream.close()

    def answer(self, status: int, body: bytes, content_type: str = "text/plain") -> None:
        self.send_response_only(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: a test asserts on `S3Proxy.refused`, not on a request log."""
