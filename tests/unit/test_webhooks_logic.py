"""The pure parts of webhooks: the body, the signature, the retry schedule, what is enqueued."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import itertools
import json
import random
from pathlib import Path

from daemon import config, state, webhooks
from daemon.lifecycle import State
from tests.webhook_receiver import readme_verifier

SECRET = "s3cret-for-hooks"  # noqa: S105 - a test key
CREATED = 1_700_000_000.0


def row(**changes: object) -> state.FileRow:
    base = state.FileRow(
        id=7, path="/in/call.ogg", folder="/in", size=10, mtime_ns=1, state=State.PENDING,
        created_at=CREATED - 60, updated_at=CREATED, operation_id="e03abc",
        duration_seconds=4.5, specification=json.dumps({"languageCode": "ru-RU"}),
    )  # fmt: skip
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def settings(*hooks: dict[str, object]) -> config.Config:
    return config.parse(
        {
            "watch": [{"path": "/in"}],
            "storage": {"bucket": "b", "access_key_id": "k", "secret_access_key": "s"},
            "speechkit": {"api_key": "a"},
            "outputs": ["txt", "json", "srt"],
            "webhooks": list(hooks),
        },
        source=Path("/etc/speechkit-watch/config.yaml"),
        environ={},
    )


def test_the_signature_is_the_hmac_sha256_of_the_body_and_the_readme_example_checks_it() -> None:
    body = b'{"event": "done"}'
    header = webhooks.sign(SECRET, body)
    expected = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert header == f"sha256={expected}"
    verified = readme_verifier()
    assert verified(SECRET.encode(), body, header)
    assert not verified(b"another secret", body, header)
    assert not verified(SECRET.encode(), body + b" ", header)
    assert webhooks.verify(SECRET, body, header)
    assert not webhooks.verify(SECRET, b"{}", header)


def test_a_done_event_names_the_file_its_outputs_operation_language_and_duration() -> None:
    settings_ = settings({"url": "https://hooks.example.org/x?token=t", "secret": SECRET})
    [delivery] = webhooks.deliveries_for(settings_, row(), "done", CREATED, new_id=lambda: "d-1")
    body = json.loads(delivery.body)
    assert body == {
        "event": "done",
        "result": "done",
        "delivery_id": "d-1",
        "time": "2023-11-14T22:13:20Z",
        "audio": "/in/call.ogg",
        "outputs": {"txt": "/in/call.txt", "json": "/in/call.json", "srt": "/in/call.srt"},
        "operation_id": "e03abc",
        "language": "ru-RU",
        "duration_seconds": 4.5,
        "error": None,
    }
    assert (delivery.delivery_id, delivery.file_id, delivery.event) == ("d-1", 7, "done")
    assert delivery.due_at == delivery.created_at == CREATED


def test_a_failed_event_carries_the_reason_and_the_error_file() -> None:
    settings_ = settings({"url": "https://a.example/", "secret": SECRET})
    error = {"stage": "check", "message": "not audio", "code": None}
    [delivery] = webhooks.deliveries_for(
        settings_, row(operation_id=None), "failed", CREATED, error=error, new_id=lambda: "d-2"
    )
    body = json.loads(delivery.body)
    assert body["outputs"] == {"error": "/in/call.error.json"}
    assert body["error"] == error
    assert body["result"] == "failed"


def test_each_receiver_gets_only_the_events_it_asked_for_each_with_its_own_id() -> None:
    settings_ = settings(
        {"url": "https://a.example/", "secret": SECRET},
        {"url": "https://b.example/", "secret": SECRET, "events": ["failed"]},
    )
    ids = iter(["one", "two", "three"])
    done = webhooks.deliveries_for(settings_, row(), "done", CREATED, new_id=lambda: next(ids))
    failed = webhooks.deliveries_for(settings_, row(), "failed", CREATED, new_id=lambda: next(ids))
    assert [(each.url, each.delivery_id) for each in done] == [("https://a.example/", "one")]
    assert [each.url for each in failed] == ["https://a.example/", "https://b.example/"]
    assert len({each.delivery_id for each in done + failed}) == 3
    assert webhooks.deliveries_for(settings(), row(), "done", CREATED) == []


def test_retries_back_off_with_jitter_for_24_hours_then_give_up() -> None:
    rng = random.Random(16)
    delivery = state.Delivery(delivery_id="d", file_id=1, event="done", url="u", body=b"{}",
                              created_at=CREATED, due_at=CREATED)  # fmt: skip
    now = CREATED
    delays = []
    while True:
        due = webhooks.next_attempt(delivery, now, rng)
        if due is None:
            break
        delays.append(due - now)
        now = due
        delivery = dataclasses.replace(delivery, attempts=delivery.attempts + 1)
    assert now - CREATED == webhooks.RETRY_FOR_SECONDS  # the last attempt is on the deadline
    assert delays[0] <= 1.0
    assert delays[1] <= 2.0
    assert all(later >= earlier / 2 for earlier, later in itertools.pairwise(delays))
    assert max(delays) <= webhooks.RETRY_CAP_SECONDS
    assert len(set(delays[:10])) == 10  # jitter: no two receivers come back in step
    assert 40 < len(delays) < 100  # a day of probing, not a flood and not a handful
    # A Retry-After from the receiver is a floor.
    fresh = dataclasses.replace(delivery, attempts=0)
    due = webhooks.next_attempt(fresh, CREATED, rng, retry_after=120.0)
    assert due == CREATED + 120.0


def test_receivers_are_shown_without_path_or_query() -> None:
    shown = webhooks.receiver("https://hooks.example.org:8443/T0/B1/secret-token?key=abc")
    assert shown == "https://hooks.example.org:8443"
    assert webhooks.receiver("http://127.0.0.1/x") == "http://127.0.0.1"


def test_config_reads_the_secret_from_secret_file_and_refuses_bad_values(tmp_path: Path) -> None:
    secret_file = tmp_path / "webhook.secret"
    secret_file.write_text(SECRET + "\n")
    secret_file.chmod(0o600)
    loaded = settings({"url": "http://127.0.0.1:9/", "secret_file": str(secret_file)})
    assert loaded.webhooks[0].secret.reveal() == SECRET
    assert SECRET in loaded.secrets()  # redacted from every log line
    assert SECRET not in repr(loaded.webhooks[0])
    bad_hook = problems({"webhooks": [{"url": "ftp://x", "secret": "s", "events": ["started"]}]})
    assert "webhooks[0].url" in bad_hook
    assert "webhooks[0].events[0]" in bad_hook
    assert "webhooks[0].secret" in problems({"webhooks": [{"url": "http://x/"}]})
    assert "'webhooks[0].events': list done, failed or both" in problems(
        {"webhooks": [{"url": "http://x/", "secret": "s", "events": []}]}
    )
    for listen in ("localhost", "127.0.0.1:99999", ":9464"):
        assert "at 'metrics.listen'" in problems({"metrics": {"listen": listen}})
        assert "HOST:PORT" in problems({"metrics": {"listen": listen}})
    assert problems({"metrics": {"listen": "[::1]:9464"}}) == ""


def problems(extra: dict[str, object]) -> str:
    try:
        config.parse(
            {
                "watch": [{"path": "/in"}],
                "storage": {"bucket": "b", "access_key_id": "k", "secret_access_key": "s"},
                "speechkit": {"api_key": "a"},
                **extra,
            },
            source=Path("conf.yaml"),
            environ={},
        )
    except config.ConfigError as error:
        return "\n".join(str(problem) for problem in error.problems)
    return ""
