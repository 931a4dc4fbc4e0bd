"""A real HTTP webhook receiver for the tests: it checks each request's signature with the
README's own verification example and answers as a receiver would (401 when it does not match).
"""

from __future__ import annotations

import http.server
import re
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

README = Path(__file__).resolve().parents[1] / "README.md"
SIGNATURE_HEADER = "X-Speechkit-Watch-Signature-256"


def readme_verifier() -> Callable[[bytes, bytes, str], bool]:
    """`verified(secret, body, signature)` exactly as the README's Webhooks section writes it."""
    text = README.read_text(encoding="utf-8")
    section = text.split("### Webhooks", 1)[1].split("\n### ", 1)[0]
    code = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert code is not None, "the README's Webhooks section has no Python example"
    lines = code.group(1).strip().splitlines()
    assert len(lines) <= 12, "the README's example is meant to be about ten lines"
    namespace: dict[str, Any] = {}
    exec(compile(code.group(1), str(README), "exec"), namespace)  # noqa: S102 - our own README
    return cast(Callable[[bytes, bytes, str], bool], namespace["verified"])


def free_port() -> int:
    """A port nothing listens on now (a receiver that is down until started there)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    answered: int


class Receiver:
    """A ThreadingHTTPServer on 127.0.0.1: `secrets` maps a request path to the secret its
    signatures are checked with; `fail_next` answers that many good requests with 503 first."""

    def __init__(self, port: int, secrets: dict[str, bytes]) -> None:
        self.port = port
        self.secrets = secrets
        self.verify = readme_verifier()
        self.received: list[Received] = []
        self.fail_next = 0
        self._lock = threading.Lock()
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> Receiver:
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                status = receiver.answer(self.path, body, self.headers.get(SIGNATURE_HEADER, ""))
                with receiver._lock:
                    receiver.received.append(
                        Received(self.path, dict(self.headers.items()), body, status)
                    )
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def answer(self, path: str, body: bytes, signature: str) -> int:
        if not self.verify(self.secrets[path], body, signature):
            return 401
        with self._lock:
            if self.fail_next > 0:
                self.fail_next -= 1
                return 503
        return 200

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def requests(self, path: str, answered: int | None = None) -> list[Received]:
        with self._lock:
            return [
                each
                for each in self.received
                if each.path == path and (answered is None or each.answered == answered)
            ]

    def __enter__(self) -> Receiver:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
