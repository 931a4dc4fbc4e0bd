"""Requests beyond the engine's capacity queue, bounded: past the limit the API answers 429.

Recognitions are held busy by links to a server that accepts connections and never answers,
so the queue fills deterministically without a model (the echo engine; the whisper engine
shares the same queue, with capacity 1).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
import requests

from speechkit_local import LocalSpeechKit, ServerSettings
from tests.integration.test_localserver import wait_done

API_KEY = "queue-test-key"


class SilentListener:
    """A URL whose server accepts the connection (backlog) and never sends a byte, until
    `release` closes it: the held connections are reset and the fetches end at once."""

    def __init__(self) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.bind(("127.0.0.1", 0))
        self._socket.listen(16)
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}/held.ogg"

    def release(self) -> None:
        self._socket.close()


@pytest.fixture
def silent_listener() -> Iterator[SilentListener]:
    listener = SilentListener()
    yield listener
    listener.release()


def submit(server: LocalSpeechKit, uri: str) -> requests.Response:
    body = {"config": {"specification": {"languageCode": "en-US"}}, "audio": {"uri": uri}}
    return requests.post(
        server.recognize_url, json=body, headers={"Authorization": f"Api-Key {API_KEY}"}, timeout=10
    )


def test_a_full_queue_answers_429_resource_exhausted_until_a_place_frees(
    silent_listener: SilentListener,
) -> None:
    settings = ServerSettings(
        api_keys=(API_KEY,),
        seconds_per_minute=0.0,
        worker_count=2,  # capacity: two recognitions at once
        queue_limit=1,  # and one more waiting
        # Held for as long as the four POSTs take, however slow the machine: a place that freed
        # early would let the fourth in. `release` below frees them.
        fetch_timeout_seconds=120.0,
    )
    with LocalSpeechKit(settings) as server:
        accepted = [submit(server, silent_listener.url) for _ in range(3)]
        refused = submit(server, silent_listener.url)

        assert [answer.status_code for answer in accepted] == [200, 200, 200]
        assert refused.status_code == 429
        assert refused.json() == {
            "code": 8,
            "message": "Quota exceeded: too many requests",
            "details": [],
        }
        assert int(refused.headers["Retry-After"]) > 0
        assert server.stats()["submissions"] == 3  # the refused one created nothing
        silent_listener.release()  # the held fetches fail: places free
        with requests.Session() as session:
            session.headers["Authorization"] = f"Api-Key {API_KEY}"
            for answer in accepted:
                assert "error" in wait_done(session, server, answer.json()["id"])
        assert submit(server, silent_listener.url).status_code == 200
