"""Webhook delivery against a real HTTP receiver and a real state file, with an injected clock:
the outbox is written with the file's end, retried, delivered once taken, given up after 24 h."""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

import pytest

from daemon import config, lifecycle, state, webhooks
from tests.webhook_receiver import Receiver, free_port

SECRET = "integration-webhook-secret"  # noqa: S105 - a test key
NOW = 1_800_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def settings(url: str, secret: str = SECRET) -> config.Config:
    return config.parse(
        {
            "watch": [{"path": "/in"}],
            "storage": {"bucket": "b", "access_key_id": "k", "secret_access_key": "s"},
            "speechkit": {"api_key": "a"},
            "webhooks": [{"url": url, "secret": secret, "timeout_seconds": 2}],
        },
        source=Path("conf.yaml"),
        environ={},
    )


def finished_row(store: state.Store, settings_: config.Config) -> state.FileRow:
    """A pending file recorded as done, its event written in the same transaction."""
    row_id = store.add_version(path="/in/a.ogg", folder="/in", size=1, mtime_ns=1, now=NOW)
    store.update(row_id, NOW, state=state.UPLOADING)
    store.update(row_id, NOW, state=state.SUBMITTING)
    store.update(row_id, NOW, state=state.PENDING, operation_id="e03int")
    row = store.get(row_id)
    events = webhooks.deliveries_for(settings_, row, "done", NOW)
    assert store.apply(row, lifecycle.finished(NOW, 1, hook=False), NOW, outbox=events)
    # A change that does not apply (the row moved on) writes no event.
    assert not store.apply(row, lifecycle.finished(NOW, 1, hook=False), NOW, outbox=events[:1])
    return store.get(row_id)


def test_a_receiver_down_then_refusing_then_up_gets_the_same_delivery(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/hook?token=abc"
    settings_ = settings(url)
    store = state.Store(tmp_path / "state.db")
    clock = Clock()
    deliverer = webhooks.Deliverer(settings_, store, clock=clock, rng=random.Random(1))
    caplog.set_level(logging.INFO)
    try:
        row = finished_row(store, settings_)
        assert row.state == state.DONE
        [waiting] = store.undelivered()
        assert waiting.file_id == row.id
        # Down: connection refused, retried later with the error recorded.
        assert deliverer.deliver_due() == 1
        [failed] = store.undelivered()
        assert (failed.attempts, failed.last_error) == (1, "cannot connect")
        assert NOW < failed.due_at <= NOW + 1.0
        assert deliverer.deliver_due() == 0  # not due yet
        with Receiver(port, {"/hook?token=abc": SECRET.encode()}) as receiver:
            receiver.start()
            receiver.fail_next = 1
            clock.now = failed.due_at
            assert deliverer.deliver_due() == 1  # 503: still waiting
            assert store.undelivered()[0].last_error == "HTTP 503"
            clock.now = store.undelivered()[0].due_at
            assert deliverer.deliver_due() == 1
            assert store.undelivered() == []
            answers = [each.answered for each in receiver.received]
            assert answers == [503, 200]
            ids = {each.headers["X-Speechkit-Watch-Delivery"] for each in receiver.received}
            bodies = {each.body for each in receiver.received}
            assert ids == {failed.delivery_id}
            assert bodies == {failed.body}  # the same bytes on every attempt
            assert json.loads(receiver.received[0].body)["delivery_id"] == failed.delivery_id
        log_text = caplog.text
        assert "webhook done delivered to http://127.0.0.1:" in log_text
        assert "token" not in log_text
        assert SECRET not in log_text
    finally:
        deliverer.stop(1.0)
        store.close()


def test_a_wrong_secret_is_refused_by_the_receiver_and_given_up_after_24_hours(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/hook"
    settings_ = settings(url, secret="not-the-receivers-secret")  # noqa: S106
    store = state.Store(tmp_path / "state.db")
    clock = Clock()
    deliverer = webhooks.Deliverer(settings_, store, clock=clock, rng=random.Random(2))
    try:
        finished_row(store, settings_)
        with Receiver(port, {"/hook": SECRET.encode()}) as receiver:
            receiver.start()
            assert deliverer.deliver_due() == 1
            assert [each.answered for each in receiver.received] == [401]
            assert store.undelivered()[0].last_error == "HTTP 401"
            clock.now = NOW + webhooks.RETRY_FOR_SECONDS - 1
            deliverer.deliver_due()
            assert store.undelivered_count() == 1  # still trying within the day
            clock.now = NOW + webhooks.RETRY_FOR_SECONDS
            caplog.set_level(logging.ERROR)
            deliverer.deliver_due()
            assert [each.answered for each in receiver.received] == [401, 401, 401]
        assert store.undelivered() == []
        assert "webhook done to http://127.0.0.1:" in caplog.text
        assert "given up after 3 attempts over 24 h: HTTP 401" in caplog.text
    finally:
        deliverer.stop(1.0)
        store.close()


def test_an_event_for_a_receiver_removed_from_the_config_is_given_up(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = state.Store(tmp_path / "state.db")
    old = settings("http://127.0.0.1:9/old")
    deliverer = webhooks.Deliverer(settings("http://127.0.0.1:9/new"), store, clock=Clock(),
                                   rng=random.Random(3))  # fmt: skip
    try:
        finished_row(store, old)
        deliverer.deliver_due()
        assert store.undelivered() == []
        assert "no longer in the config" in caplog.text
    finally:
        deliverer.stop(1.0)
        store.close()
