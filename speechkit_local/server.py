"""HTTP side of the local SpeechKit server: routing, keep-alive, logging, the test control API.

A stdlib ThreadingHTTPServer speaking HTTP/1.1 with keep-alive. Every connection thread is
tracked so that `stop()` can close idle keep-alive connections and join their threads: a test
that starts the server leaks nothing.

The control API under /_control/ exists for tests only. It has no authentication and answers
only loopback clients.
"""

from __future__ import annotations

import contextlib
import http.server
import ipaddress
import json
import logging
import selectors
import socket
import socketserver
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable
from typing import Any

from speechkit_local import iam, logic, v3
from speechkit_local import service as service_module
from speechkit_local.faults import FaultSettings

LOGGER = logging.getLogger("speechkit_local")

RECOGNIZE_PATH = "/speech/stt/v2/longRunningRecognize"
OPERATIONS_PATH = "/operations"
CONTROL_PREFIX = "/_control/"

IDLE_CONNECTION_SECONDS = 60.0  # an idle keep-alive connection is closed after this long
MAX_REQUEST_BODY_BYTES = 1024 * 1024  # a recognize request is a few hundred bytes
STOP_JOIN_SECONDS = 10.0  # bound on waiting for one connection thread at stop
CLIENT_REQUEST_ID_MAX = 100  # x-client-request-id is logged; cap what a client can inject


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8 addresses (and 'localhost'); the only hosts this server binds."""
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.version == 4 and address.is_loopback


def _printable(value: str) -> str:
    return "".join(character if character.isprintable() else "?" for character in value)[
        :CLIENT_REQUEST_ID_MAX
    ]


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "speechkit-local"
    sys_version = ""
    timeout = IDLE_CONNECTION_SECONDS
    # Headers and body leave in two writes; with Nagle on, the body waits for the client's
    # delayed ACK (40 ms per request on Linux).
    disable_nagle_algorithm = True
    server: _Server

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Silenced: _dispatch logs one line per request with the request ids."""

    def log_message(self, format: str, *args: Any) -> None:
        LOGGER.debug("http: " + format, *args)

    def _read_body(self, limit: int) -> bytes | service_module.Reply:
        if self.headers.get("Transfer-Encoding", "").lower() not in ("", "identity"):
            self.close_connection = True
            return service_module.Reply(
                411,
                logic.error_body(logic.CODE_INVALID_ARGUMENT, "Content-Length is required"),
            )
        raw_length = self.headers.get("Content-Length")
        if raw_length is None:
            return b""
        try:
            length = int(raw_length)
        except ValueError:
            length = -1
        if length < 0 or length > limit:
            self.close_connection = True
            return service_module.Reply(
                413 if length > 0 else 400,
                logic.error_body(logic.CODE_INVALID_ARGUMENT, "Invalid request body length"),
            )
        return self.rfile.read(length)

    def _route(self, method: str, path: str, body: bytes) -> service_module.Reply:
        service = self.server.service
        authorization = self.headers.get("Authorization")
        if path.startswith(v3.DEFAULT_PREFIX + "/"):
            return self._route_v3(method, path[len(v3.DEFAULT_PREFIX) :], body)
        if path == RECOGNIZE_PATH:
            if method != "POST":
                return _method_not_allowed()
            return service.submit(authorization, body)
        if path.startswith(OPERATIONS_PATH + "/"):
            operation_id = path[len(OPERATIONS_PATH) + 1 :]
            if method != "GET":
                return _method_not_allowed()
            if not operation_id or "/" in operation_id:
                return service_module.error_reply(logic.CODE_NOT_FOUND, "Operation not found")
            return service.get_operation(authorization, urllib.parse.unquote(operation_id))
        if path == iam.IAM_PATH:
            if method != "POST":
                return _method_not_allowed()
            return service.exchange_jwt(body)
        if path == iam.METADATA_PATH:
            if method != "GET":
                return _method_not_allowed()
            return service.metadata_token(self.headers.get("Metadata-Flavor"))
        if path.startswith(CONTROL_PREFIX):
            if not is_loopback(self.client_address[0]):
                return service_module.error_reply(logic.CODE_PERMISSION_DENIED, "Loopback only")
            return control(service, method, path[len(CONTROL_PREFIX) :], body)
        return service_module.error_reply(logic.CODE_NOT_FOUND, "Not found")

    def _route_v3(self, method: str, path: str, body: bytes) -> service_module.Reply:
        service = self.server.service
        authorization = self.headers.get("Authorization")
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
        operation_id = (query.get("operationId") or query.get("operation_id") or [""])[0]
        wanted = {v3.RECOGNIZE_PATH: "POST", v3.GET_RECOGNITION_PATH: "GET",
                  v3.DELETE_RECOGNITION_PATH: "DELETE"}.get(path)  # fmt: skip
        if wanted is None:
            return service_module.error_reply(logic.CODE_NOT_FOUND, "Not found")
        if method != wanted:
            return _method_not_allowed()
        if path == v3.RECOGNIZE_PATH:
            return service.submit_v3(authorization, body)
        if not operation_id:
            return service_module.error_reply(
                logic.CODE_INVALID_ARGUMENT, "operationId is required"
            )
        if path == v3.GET_RECOGNITION_PATH:
            return service.get_recognition(authorization, operation_id)
        return service.delete_recognition(authorization, operation_id)

    def _dispatch(self, method: str) -> None:
        request_id = str(uuid.uuid4())
        path = urllib.parse.urlsplit(self.path).path
        inline = path == v3.DEFAULT_PREFIX + v3.RECOGNIZE_PATH  # may carry the audio itself
        body = self._read_body(v3.MAX_REQUEST_BYTES if inline else MAX_REQUEST_BODY_BYTES)
        if isinstance(body, service_module.Reply):
            reply = body
        else:
            try:
                reply = self._route(method, path, body)
            except Exception:  # a bug must answer 500 and be logged, not just hang up
                LOGGER.exception("%s %s failed x-request-id=%s", method, path, request_id)
                reply = service_module.error_reply(logic.CODE_INTERNAL, "Internal error")
        client_request_id = self.headers.get("x-client-request-id")
        client_part = (
            f" x-client-request-id={_printable(client_request_id)}" if client_request_id else ""
        )
        if reply.drop:
            self.close_connection = True
            LOGGER.info("%s %s dropped x-request-id=%s%s", method, path, request_id, client_part)
            return
        payload = (
            reply.text.encode("utf-8")
            if reply.text is not None
            else json.dumps(reply.body, ensure_ascii=False).encode("utf-8")
        )
        self.send_response(reply.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("x-request-id", request_id)
        for name, value in reply.headers:
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(payload)
        LOGGER.info(
            "%s %s %d x-request-id=%s%s", method, path, reply.status, request_id, client_part
        )


def _method_not_allowed() -> service_module.Reply:
    return service_module.Reply(
        405, logic.error_body(logic.CODE_UNIMPLEMENTED, "Method not allowed")
    )


def _json_object(body: bytes) -> dict[str, Any]:
    document = json.loads(body.decode("utf-8")) if body.strip() else {}
    if not isinstance(document, dict):
        raise TypeError("expected a JSON object")
    return document


def _bearer_token(document: dict[str, Any]) -> tuple[str, float | None]:
    token, expires_at = document.get("token"), document.get("expires_at")
    if not isinstance(token, str) or not token:
        raise ValueError("'token' must be a non-empty string")
    if expires_at is not None and (
        isinstance(expires_at, bool) or not isinstance(expires_at, int | float)
    ):
        raise ValueError("'expires_at' must be epoch seconds or null")
    return token, None if expires_at is None else float(expires_at)


def _outage_status(document: dict[str, Any]) -> int | None:
    status = document.get("outage_status")
    if status is not None and (isinstance(status, bool) or not isinstance(status, int)):
        raise ValueError("'outage_status' must be an HTTP status or null")
    return status


def control(
    service: service_module.SpeechKitService, method: str, command: str, body: bytes
) -> service_module.Reply:
    """The test-only control API: stats, faults, reset, config, expire/{id}, bearer-tokens, iam.

    `iam` takes `{"outage_status": 503}` (every token exchange fails so) or `null` (healthy).
    """
    bad_request = logic.CODE_INVALID_ARGUMENT
    if command == "stats" and method == "GET":
        return service_module.Reply(200, service.stats())
    if method != "POST":
        return _method_not_allowed()
    try:
        document = _json_object(body)
        if command == "faults":
            return service_module.Reply(200, service.set_faults(document).to_json())
        if command == "config":
            service.set_config(document)
            return service_module.Reply(200, service.stats()["config"])
        if command == "bearer-tokens":
            service.accept_bearer_token(*_bearer_token(document))
            return service_module.Reply(200, {})
        if command == "iam":
            service.set_iam_outage(_outage_status(document))
            return service_module.Reply(200, service.stats()["iam"])
    except (ValueError, TypeError) as error:
        return service_module.error_reply(bad_request, str(error))
    if command == "reset":
        service.reset()
        return service_module.Reply(200, {})
    if command.startswith("expire/"):
        if service.expire_operation(command[len("expire/") :]):
            return service_module.Reply(200, {})
        return service_module.error_reply(logic.CODE_NOT_FOUND, "Operation not found")
    return service_module.error_reply(logic.CODE_NOT_FOUND, "Not found")


class _Server(http.server.ThreadingHTTPServer):
    """Tracks each connection's thread and socket so stop() can close and join them."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], service: service_module.SpeechKitService) -> None:
        self.service = service
        self._connections_lock = threading.Lock()
        self._connections: dict[threading.Thread, socket.socket] = {}
        # stop() writes a byte here to wake the accept loop at once (no polling interval).
        self._wake_reader, self._wake_writer = socket.socketpair()
        super().__init__(address, _Handler)

    def serve_until_stopped(self) -> None:
        """Accept connections until request_stop(); each is served on its own thread."""
        with selectors.DefaultSelector() as selector:
            selector.register(self.socket, selectors.EVENT_READ)
            selector.register(self._wake_reader, selectors.EVENT_READ)
            while True:
                for key, _ in selector.select():
                    if key.fileobj is self._wake_reader:
                        return
                    try:
                        connection, client_address = self.get_request()
                    except OSError:
                        continue  # the client gave up before we accepted
                    self.process_request(connection, client_address)

    def request_stop(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_writer.send(b"x")

    def server_close(self) -> None:
        super().server_close()
        self._wake_reader.close()
        self._wake_writer.close()

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host name (getfqdn), which can stall without DNS.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(
            target=self._serve_connection,
            args=(request, client_address),
            name=f"localserver-connection-{client_address[1]}",
            daemon=True,
        )
        with self._connections_lock:
            self._connections[thread] = request
        thread.start()

    def _serve_connection(self, request: Any, client_address: Any) -> None:
        try:
            self.process_request_thread(request, client_address)
        finally:
            with self._connections_lock:
                self._connections.pop(threading.current_thread(), None)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client hanging up mid-answer is routine for a test server; keep stderr readable.
        LOGGER.debug("connection from %s ended with an error", client_address, exc_info=True)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections.items())
        for _, connection in connections:
            with contextlib.suppress(OSError):  # already closed by its own thread
                connection.shutdown(socket.SHUT_RDWR)
        for thread, _ in connections:
            thread.join(STOP_JOIN_SECONDS)


class LocalSpeechKit:
    """The local SpeechKit-compatible server, in-process. Use as a context manager in tests."""

    def __init__(
        self,
        settings: service_module.ServerSettings | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings or service_module.ServerSettings()
        if not is_loopback(self.settings.host):
            raise ValueError(
                f"the local SpeechKit server listens on loopback only, not {self.settings.host!r}"
            )
        self._service = service_module.SpeechKitService(self.settings, clock=clock)
        self._server: _Server | None = None
        self._accept_thread: threading.Thread | None = None

    def start(self) -> None:
        """Bind and serve in a background thread."""
        if self._server is not None:
            raise RuntimeError("already started")
        host = "127.0.0.1" if self.settings.host == "localhost" else self.settings.host
        self._server = _Server((host, self.settings.port), self._service)
        self._accept_thread = threading.Thread(
            target=self._server.serve_until_stopped,
            name="localserver-accept",
            daemon=True,
        )
        self._accept_thread.start()
        LOGGER.info("local SpeechKit listening on %s", self.url)

    def stop(self) -> None:
        """Stop serving, close every connection, finish or cancel recognitions; idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        self._service.stopping.set()  # wakes requests sleeping in a slow fault
        server.request_stop()
        if self._accept_thread is not None:
            self._accept_thread.join(STOP_JOIN_SECONDS)
        server.server_close()
        server.close_connections()
        self._service.close()

    def __enter__(self) -> LocalSpeechKit:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("not started")
        return self._server.server_port

    @property
    def url(self) -> str:
        """Base URL, e.g. http://127.0.0.1:PORT."""
        return (
            f"http://{self._server.server_name if self._server else self.settings.host}:{self.port}"
        )

    @property
    def recognize_url(self) -> str:
        return self.url + RECOGNIZE_PATH

    @property
    def stt_v3_url(self) -> str:
        """API v3's base: recognizeFileAsync, getRecognition, deleteRecognition under it."""
        return self.url + v3.DEFAULT_PREFIX

    @property
    def operations_url(self) -> str:
        return self.url + OPERATIONS_PATH

    @property
    def control_url(self) -> str:
        return self.url + CONTROL_PREFIX.rstrip("/")

    def set_faults(self, **changes: object) -> FaultSettings:
        """Merge fault settings (see FaultSettings); ValueError for an unknown key or value."""
        return self._service.set_faults(changes)

    def set_config(self, **changes: object) -> None:
        """Change seconds_per_minute, base_delay_seconds or retention_seconds at runtime."""
        self._service.set_config(changes)

    def stats(self) -> dict[str, Any]:
        return self._service.stats()

    def reset(self) -> None:
        """Clear faults and counters (operations stay)."""
        self._service.reset()

    def accept_bearer_token(self, token: str, expires_at: float) -> None:
        """Accept `token` as an IAM token until `expires_at` (epoch seconds, server clock)."""
        self._service.accept_bearer_token(token, expires_at)

    def expire_operation(self, operation_id: str) -> bool:
        """Forget an operation now (its GET answers 404); False if it is unknown."""
        return self._service.expire_operation(operation_id)

    @property
    def iam_url(self) -> str:
        """The IAM token exchange endpoint (`speechkit.iam_url`)."""
        return self.url + iam.IAM_PATH

    @property
    def metadata_url(self) -> str:
        """The metadata service token endpoint (`speechkit.metadata_url`)."""
        return self.url + iam.METADATA_PATH

    def set_iam_outage(self, status: int | None) -> None:
        """Every token exchange answers `status` (500, 503, 504) until set back to None."""
        self._service.set_iam_outage(status)

    def issued_tokens(self) -> list[str]:
        """Every IAM token issued so far (tests check that none leaked)."""
        return self._service.issued_tokens()
