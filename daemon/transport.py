"""HTTP for the calls made once or twice per file (SpeechKit requests, a small object's PUT):
urllib3 connection pools, with the environment's proxy and CA settings read once.

requests and botocore are general clients: per request they merge session settings, walk the
environment for proxies, read ~/.netrc, keep cookies, run hooks and event chains. For the two
or three calls every file makes that is most of the daemon's CPU per call (about 1.2 ms against
0.75 ms here, on the 300-file burst of `make bench`). This module does only what those calls
need, with the same environment: `HTTPS_PROXY`/`HTTP_PROXY`/`ALL_PROXY` and `NO_PROXY` (as
`urllib.request` reads them, which is what requests and botocore use), and a CA bundle from the
variables the replaced client honoured (requests: `REQUESTS_CA_BUNDLE`, `CURL_CA_BUNDLE`;
botocore: `AWS_CA_BUNDLE`), else certifi's, as both do.

Nothing is retried here and no redirect is followed: the callers decide (a submission that may
have reached the service must not be sent again). A failure is a TransportError that says
whether the request can have left this machine.
"""

from __future__ import annotations

import json
import os
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import certifi
import urllib3
import urllib3.exceptions

REQUESTS_CA_VARIABLES = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")
BOTOCORE_CA_VARIABLES = ("AWS_CA_BUNDLE",)
POOL_CONNECTIONS = 10  # kept-alive connections per host: above any `concurrency` worth having

# Failures that happen before a byte of the request is sent: the connection was never made.
_NOT_SENT = (
    urllib3.exceptions.NewConnectionError,  # refused, unreachable, name resolution (a subclass)
    urllib3.exceptions.ConnectTimeoutError,
)
_TUNNEL_REFUSED = "Tunnel connection failed:"  # a proxy's error answer to CONNECT
# The function of http.client (and of urllib3's copy of it) that asks a proxy for a tunnel: an
# error raised in it, whatever it is, came before a byte of the request itself was sent.
_TUNNEL_FUNCTION = "_tunnel"
# What a proxy's error answer to CONNECT means, by its status: 403 and the like, 407, 5xx.
PROXY_REFUSED = "the proxy refused the tunnel"
PROXY_WANTS_CREDENTIALS = "the proxy wants credentials"
PROXY_CANNOT_REACH = "the proxy could not reach the server"
TUNNEL_REFUSALS = (PROXY_REFUSED, PROXY_WANTS_CREDENTIALS, PROXY_CANNOT_REACH)


class TransportError(Exception):
    """A request got no HTTP answer. `sent` is False only when it certainly never left (the
    connection, or the proxy's tunnel to the server, could not be made); `timed_out` when a
    timeout ended it."""

    def __init__(self, reason: str, *, sent: bool, timed_out: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.sent = sent
        self.timed_out = timed_out


class Response:
    """A whole HTTP answer: status, headers (case-insensitive), body."""

    def __init__(self, url: str, status: int, reason: str, headers: Any, content: bytes) -> None:
        self.url = url
        self.status_code = status
        self.reason = reason
        self.headers: Mapping[str, str] = headers
        self.content = content

    def json(self) -> Any:
        """The body as JSON; ValueError when it is not (or not UTF-8)."""
        return json.loads(self.content.decode("utf-8"))


class Transport:
    """Pools of kept-alive connections, one manager per proxy (or none), safe across threads."""

    def __init__(
        self,
        *,
        ca_variables: Sequence[str] = REQUESTS_CA_VARIABLES,
    ) -> None:
        # The environment as it is now: a daemon's does not change while it runs.
        self._proxies = urllib.request.getproxies_environment()
        self._ca_bundle = next(
            (os.environ[name] for name in ca_variables if os.environ.get(name)), certifi.where()
        )
        self._managers: dict[str, urllib3.PoolManager] = {}
        self._proxy_of: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        body: bytes | None = None,
        timeout: float,
        connect_timeout: float | None = None,
    ) -> Response:
        """Send one request and read the whole answer; TransportError when there is none.

        `timeout` bounds the connect and each read; `connect_timeout`, when given, the connect
        alone (a nearby store that does not accept a connection soon is down, while an upload
        may take a while to be answered).
        """
        manager = self._manager_for(url)
        connect = timeout if connect_timeout is None else connect_timeout
        try:
            answer = manager.urlopen(
                method, url, body=body, headers=dict(headers), retries=False, redirect=False,
                timeout=urllib3.Timeout(connect=connect, read=timeout), preload_content=True,
            )  # fmt: skip
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise TransportError(
                describe(error), sent=was_sent(error), timed_out=_timed_out(error)
            ) from None
        return Response(url, answer.status, answer.reason or "", answer.headers, answer.data)

    def close(self) -> None:
        with self._lock:
            managers, self._managers = list(self._managers.values()), {}
        for manager in managers:
            manager.clear()

    def _manager_for(self, url: str) -> urllib3.PoolManager:
        parts = urllib.parse.urlsplit(url)
        host_key = (parts.scheme, parts.netloc)
        with self._lock:
            proxy = self._proxy_of.get(host_key)
            if proxy is None:
                proxy = self._proxy_for(parts)
                self._proxy_of[host_key] = proxy
            manager = self._managers.get(proxy)
            if manager is None:
                manager = self._new_manager(proxy)
                self._managers[proxy] = manager
            return manager

    def _proxy_for(self, parts: urllib.parse.SplitResult) -> str:
        """The proxy URL for a scheme and host ("" for none), as requests would choose it."""
        host = parts.hostname or ""
        if not self._proxies or _bypassed(host, parts.port, self._proxies):
            return ""
        return self._proxies.get(parts.scheme) or self._proxies.get("all") or ""

    def _new_manager(self, proxy: str) -> urllib3.PoolManager:
        settings: dict[str, Any] = {
            "num_pools": POOL_CONNECTIONS, "maxsize": POOL_CONNECTIONS,
            "cert_reqs": "CERT_REQUIRED", "ca_certs": self._ca_bundle,
        }  # fmt: skip
        if not proxy:
            return urllib3.PoolManager(**settings)
        if "://" not in proxy:
            proxy = f"http://{proxy}"  # as requests reads `host:port`
        proxied = urllib.parse.urlsplit(proxy)
        if proxied.username:
            credentials = urllib.parse.unquote(proxied.username)
            credentials += ":" + urllib.parse.unquote(proxied.password or "")
            settings["proxy_headers"] = urllib3.make_headers(proxy_basic_auth=credentials)
        return urllib3.ProxyManager(proxy, **settings)


def _bypassed(host: str, port: int | None, proxies: Mapping[str, str]) -> bool:
    """Whether NO_PROXY sends `host` direct (urllib.request's rules, which requests applies)."""
    no_proxy = proxies.get("no")
    if not no_proxy:
        return False
    target = f"{host}:{port}" if port else host
    bypass = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]
    return bool(bypass(target, {"no": no_proxy}))


def was_sent(error: BaseException) -> bool:
    """False only when the request certainly never reached the server: the connect failed, or
    the proxy's tunnel to it did (refused, unanswered, closed)."""
    return not any(
        isinstance(cause, _NOT_SENT) or _raised_in_tunnel(cause) for cause in _causes(error)
    )


def tunnel_refusal(error: BaseException) -> str | None:
    """What a proxy's error answer to CONNECT means, with the answer ("the proxy refused the
    tunnel (403 Forbidden)"), when `error` comes of one (urllib3's errors, and botocore's that
    wrap them); else None."""
    for cause in _causes(error):
        answer = _tunnel_answer(cause)
        if answer is None:
            continue
        status = answer.partition(" ")[0]
        if status == "407":
            return f"{PROXY_WANTS_CREDENTIALS} ({answer})"
        if status.startswith("5"):
            return f"{PROXY_CANNOT_REACH} ({answer})"
        return f"{PROXY_REFUSED} ({answer})"
    return None


def _causes(error: BaseException) -> Iterator[BaseException]:
    """The error and every exception it wraps (urllib3 keeps them in `reason` or `args`)."""
    seen: set[int] = set()
    pending: list[object] = [error]
    while pending:
        cause = pending.pop()
        if not isinstance(cause, BaseException) or id(cause) in seen:
            continue
        seen.add(id(cause))
        yield cause
        pending.extend([getattr(cause, "reason", None), cause.__cause__, cause.__context__])
        pending.extend(cause.args)


def _tunnel_answer(cause: BaseException) -> str | None:
    """The proxy's answer ("403 Forbidden") when `cause` is its error answer to CONNECT.

    urllib3 (and http.client before it) says so only in the message of an OSError, and wraps
    it in an error that reads as a dropped connection.
    """
    if isinstance(cause, OSError) and str(cause).startswith(_TUNNEL_REFUSED):
        return str(cause).removeprefix(_TUNNEL_REFUSED).strip()
    return None


def _raised_in_tunnel(cause: BaseException) -> bool:
    """Whether `cause` was raised while a proxy was asked for the tunnel (its traceback passes
    through http.client's `_tunnel`): a refusal, no answer in time, a closed connection."""
    frame = cause.__traceback__
    while frame is not None:
        if frame.tb_frame.f_code.co_name == _TUNNEL_FUNCTION:
            return True
        frame = frame.tb_next
    return False


def _timed_out(error: BaseException) -> bool:
    """Whether a timeout ended the request (urllib3 1.x wraps one in a ProxyError when it
    struck while the proxy was asked for a tunnel)."""
    causes = list(_causes(error))
    # urllib3 makes a refused connection a ConnectTimeoutError too: it is not a timeout.
    if any(isinstance(cause, urllib3.exceptions.NewConnectionError) for cause in causes):
        return False
    return any(
        isinstance(cause, urllib3.exceptions.TimeoutError | TimeoutError) for cause in causes
    )


def describe(error: BaseException) -> str:
    """A short reason for a network failure, without URLs (presigned queries stay out of logs)."""
    if _timed_out(error):
        return "timed out"
    refusal = tunnel_refusal(error)
    if refusal is not None:
        return refusal
    text = " ".join(str(part) for part in (error, getattr(error, "reason", "")))
    if "Connection refused" in text:
        return "connection refused"
    if (
        "Name or service not known" in text
        or "NameResolution" in text
        or ("getaddrinfo" in text or "resolve" in text)
    ):
        return "name resolution failed"
    if "RemoteDisconnected" in text or "Connection aborted" in text:
        return "connection closed without an answer"
    if isinstance(error, urllib3.exceptions.SSLError):
        return "TLS failed"
    if isinstance(error, urllib3.exceptions.ProxyError):
        return "the proxy failed"
    return type(error).__name__
