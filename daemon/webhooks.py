"""Webhooks: a signed HTTP POST to each configured receiver when a file ends, at least once.

An event is written to the state file's outbox in the transaction that records the file's end
(`deliveries_for`, passed to `Store.apply`), so a crash between "done" and the POST loses
nothing. One thread (`Deliverer`) sends what is due, off the main path: a receiver that is down
or slow delays only its own deliveries, each attempt bounded by `timeout_seconds`. Every attempt
of an event sends the same bytes with the same delivery id; a 2xx answer takes it out of the
outbox. Failures are retried with backoff and jitter (a `Retry-After` is honoured) for
`RETRY_FOR_SECONDS`, then the event is given up with one log line.

The signature is GitHub's scheme: `X-Speechkit-Watch-Signature-256: sha256=HEX`, the HMAC-SHA256
of the raw body with the receiver's secret. Receivers are named in logs and `status` by scheme,
host and port only: a webhook URL often carries a token in its path or query.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import random
import threading
import urllib.parse
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import requests

from daemon import layout, metrics, scheduling, state
from daemon.config import Config, Webhook
from daemon.render import transcripts

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Speechkit-Watch-Signature-256"
DELIVERY_HEADER = "X-Speechkit-Watch-Delivery"
EVENT_HEADER = "X-Speechkit-Watch-Event"
RETRY_FOR_SECONDS = 24 * 3600.0  # a receiver down for a day still gets every event
RETRY_CAP_SECONDS = 1800.0  # a long outage is probed twice an hour, about 60 attempts a day
# The thread looks at the outbox at least this often: events enqueued by `transcribe` (another
# process) are sent by the daemon within seconds.
IDLE_POLL_SECONDS = 5.0
BATCH = 50  # deliveries taken per look at the outbox
MAX_ERROR_TEXT = 200  # characters of a receiver's answer kept in the outbox and the log


# -- pure: what is sent -----------------------------------------------------------------------


def receiver(url: str) -> str:
    """A receiver as logs and `status` show it: scheme, host and port, never path or query."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}"


def sign(secret: str, body: bytes) -> str:
    """The signature header's value: `sha256=` and the HMAC-SHA256 of the body, in hex."""
    digest = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify(secret: str, body: bytes, header: str) -> bool:
    """What a receiver does (the README's example): compare in constant time."""
    return hmac.compare_digest(sign(secret, body), header)


def event_body(
    *,
    event: str,
    delivery_id: str,
    at: float,
    row: state.FileRow,
    outputs: dict[str, str],
    error: dict[str, Any] | None = None,
) -> bytes:
    """The JSON body of an event: the same bytes on every attempt."""
    specification = json.loads(row.specification) if row.specification else {}
    document = {
        "event": event,
        "delivery_id": delivery_id,
        "time": transcripts.iso_time(at),
        "audio": row.path,
        "result": event,
        "outputs": outputs,
        "operation_id": row.operation_id,
        "language": specification.get("languageCode"),
        "duration_seconds": row.duration_seconds,
        "error": error,
    }
    return json.dumps(document, ensure_ascii=False, sort_keys=True).encode("utf-8")


def row_outputs(config: Config, row: state.FileRow, event: str) -> dict[str, str]:
    """The outputs a receiver can fetch: every configured one when done, the error file else."""
    if event == "done":
        return {name: str(layout.row_output(config, row, name)) for name in config.outputs}
    return {"error": str(layout.row_error(config, row))}


def deliveries_for(
    config: Config,
    row: state.FileRow,
    event: str,
    now: float,
    *,
    error: dict[str, Any] | None = None,
    new_id: Callable[[], str] = lambda: uuid.uuid4().hex,
) -> list[state.Delivery]:
    """The outbox entries for a file that ends with `event`: one per receiver that wants it."""
    outputs = row_outputs(config, row, event)
    found = []
    for webhook in config.webhooks:
        if event not in webhook.events:
            continue
        delivery_id = new_id()
        body = event_body(event=event, delivery_id=delivery_id, at=now, row=row,
                          outputs=outputs, error=error)  # fmt: skip
        found.append(
            state.Delivery(delivery_id=delivery_id, file_id=row.id, event=event,
                           url=webhook.url, body=body, created_at=now, due_at=now)
        )  # fmt: skip
    return found


def next_attempt(
    delivery: state.Delivery, now: float, rng: random.Random, retry_after: float | None = None
) -> float | None:
    """When to try a delivery again after a failed attempt, or None: give it up (it has been
    retried for RETRY_FOR_SECONDS)."""
    if now - delivery.created_at >= RETRY_FOR_SECONDS:
        return None
    delay = scheduling.retry_delay(delivery.attempts + 1, rng, retry_after, cap=RETRY_CAP_SECONDS)
    # The last attempt falls on the deadline rather than a cap's length after it.
    return min(now + delay, delivery.created_at + RETRY_FOR_SECONDS)


# -- the adapter: one POST ----------------------------------------------------------------------


class Refused(Exception):  # noqa: N818 - the receiver's word, not an error of ours
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def post(session: requests.Session, webhook: Webhook, delivery: state.Delivery) -> None:
    """Send one delivery; Refused (with what the receiver said) unless it answered 2xx."""
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "speechkit-watch",
        SIGNATURE_HEADER: sign(webhook.secret.reveal(), delivery.body),
        DELIVERY_HEADER: delivery.delivery_id,
        EVENT_HEADER: delivery.event,
    }
    try:
        answer = session.post(
            webhook.url, data=delivery.body, headers=headers,
            timeout=webhook.timeout_seconds, allow_redirects=False,
        )  # fmt: skip
    except requests.RequestException as error:
        raise Refused(_error_text(error)) from None
    with answer:
        if 200 <= answer.status_code < 300:
            return
        text = " ".join(answer.text[:MAX_ERROR_TEXT].split())
        raise Refused(
            f"HTTP {answer.status_code}{': ' + text if text else ''}",
            _retry_after(answer.headers.get("Retry-After")),
        )


def _error_text(error: requests.RequestException) -> str:
    """The kind of network failure, without the URL (which may hold a token)."""
    if isinstance(error, requests.Timeout):
        return "no answer within the timeout"
    if isinstance(error, requests.ConnectionError):
        return "cannot connect"
    return type(error).__name__


def _retry_after(value: str | None) -> float | None:
    try:
        return None if value is None else max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: the backoff decides


# -- the thread --------------------------------------------------------------------------------


class Deliverer:
    """Sends due deliveries from the outbox, in a thread of its own."""

    def __init__(
        self,
        config: Config,
        store: state.Store,
        *,
        clock: Callable[[], float],
        rng: random.Random,
    ) -> None:
        self.config = config  # replaced on reload: new secrets and receivers apply at once
        self.store = store
        self.clock = clock
        self.rng = rng
        self.stopping = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._session = requests.Session()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="webhooks", daemon=True)
        self._thread.start()

    def alive(self) -> bool:
        return self._thread is None or self._thread.is_alive()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float) -> None:
        """Stop; an attempt in flight is abandoned after `timeout` and sent again next time."""
        self.stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._session.close()

    def _run(self) -> None:
        while not self.stopping.is_set():
            self._wake.clear()
            try:
                self.deliver_due()
                wait = self._wait_seconds()
            except state.StateWriteError as error:
                log.error("webhooks: %s; deliveries wait until it can be written", error)
                wait = IDLE_POLL_SECONDS
            except Exception:
                log.exception("webhooks: unexpected error; trying again shortly")
                wait = IDLE_POLL_SECONDS
            self._wake.wait(wait)

    def _wait_seconds(self) -> float:
        due = self.store.next_delivery_at()
        if due is None:
            return IDLE_POLL_SECONDS
        return max(0.0, min(IDLE_POLL_SECONDS, due - self.clock()))

    def deliver_due(self) -> int:
        """Attempt every delivery that is due now, oldest first; how many were attempted."""
        attempted = 0
        for delivery in self.store.due_deliveries(self.clock(), limit=BATCH):
            if self.stopping.is_set():
                break
            self.attempt(delivery)
            attempted += 1
        return attempted

    def attempt(self, delivery: state.Delivery) -> bool:
        """One attempt; True when the receiver took it. The outcome is written to the outbox."""
        name = receiver(delivery.url)
        webhook = {each.url: each for each in self.config.webhooks}.get(delivery.url)
        if webhook is None:
            self.store.delivery_ended(delivery.delivery_id)
            metrics.webhook_delivery("given_up")
            log.warning(
                "webhook %s to %s given up: that receiver is no longer in the config "
                "(delivery %s)", delivery.event, name, delivery.delivery_id,
            )  # fmt: skip
            return False
        try:
            post(self._session, webhook, delivery)
        except Refused as refused:
            return self._failed(delivery, name, refused)
        if self.stopping.is_set():
            return True  # the store may be closing: it is sent again at the next start
        self.store.delivery_ended(delivery.delivery_id)
        metrics.webhook_delivery("delivered")
        log.info(
            "webhook %s delivered to %s (delivery %s, attempt %d)",
            delivery.event, name, delivery.delivery_id, delivery.attempts + 1,
        )  # fmt: skip
        return True

    def _failed(self, delivery: state.Delivery, name: str, refused: Refused) -> bool:
        now = self.clock()
        attempts = delivery.attempts + 1
        due_at = next_attempt(delivery, now, self.rng, refused.retry_after)
        if self.stopping.is_set():
            return False
        if due_at is None:
            self.store.delivery_ended(delivery.delivery_id)
            metrics.webhook_delivery("given_up")
            log.error(
                "webhook %s to %s given up after %d attempts over %.0f h: %s (delivery %s)",
                delivery.event, name, attempts, RETRY_FOR_SECONDS / 3600, refused,
                delivery.delivery_id,
            )  # fmt: skip
            return False
        self.store.delivery_failed(
            delivery.delivery_id, attempts=attempts, due_at=due_at, error=str(refused)
        )
        metrics.webhook_delivery("failed")
        log.warning(
            "webhook %s to %s failed: %s; attempt %d, retrying in %.1f s (delivery %s)",
            delivery.event, name, refused, attempts, due_at - now, delivery.delivery_id,
        )  # fmt: skip
        return False


def undelivered_report(deliveries: Iterable[state.Delivery], now: float) -> list[dict[str, Any]]:
    """What `status` shows of the outbox."""
    return [
        {
            "delivery_id": delivery.delivery_id,
            "event": delivery.event,
            "receiver": receiver(delivery.url),
            "file": json.loads(delivery.body).get("audio"),
            "age_seconds": round(now - delivery.created_at, 1),
            "attempts": delivery.attempts,
            "next_attempt_in_seconds": round(max(0.0, delivery.due_at - now), 1),
            "last_error": delivery.last_error,
        }
        for delivery in deliveries
    ]
