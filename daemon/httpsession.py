"""A requests session that reads its settings from the environment once per host, not per call.

requests looks up proxies (walking all of os.environ, then the no_proxy rules) and CA bundle
variables for every request: about a millisecond of CPU each, the largest single cost of a status
check. A daemon's environment does not change while it runs, so the answer for a scheme and host
is kept; requests that pass their own proxies, verify, cert or stream settings still get
requests' own merging.
"""

from __future__ import annotations

import threading
import urllib.parse
from typing import Any

import requests


class EnvironmentOnceSession(requests.Session):
    def __init__(self) -> None:
        super().__init__()
        self._environment: dict[tuple[str, str], Any] = {}
        self._environment_lock = threading.Lock()

    def merge_environment_settings(
        self, url: str | bytes | None, proxies: Any, stream: Any, verify: Any, cert: Any
    ) -> Any:  # requests' own _Settings, a TypedDict only its stubs know
        if proxies or stream is not None or verify is not None or cert is not None or not url:
            return super().merge_environment_settings(url, proxies, stream, verify, cert)
        text = url.decode() if isinstance(url, bytes) else url
        parts = urllib.parse.urlsplit(text)
        key = (parts.scheme, parts.netloc)
        with self._environment_lock:
            settings = self._environment.get(key)
            if settings is None:
                settings = super().merge_environment_settings(text, {}, None, None, None)
                self._environment[key] = settings
        return {**settings, "proxies": dict(settings["proxies"])}
