"""Webhooks and metrics as an operator sees them, with the daemon as a real subprocess: a
receiver down at first (and the daemon killed with SIGKILL before it came up), a wrong secret
refused by the receiver's check, the same delivery id on a retry; a scrape before and after."""

from __future__ import annotations

import json
import shutil
import urllib.request
from collections.abc import Callable
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.harness import STATUS_POLL_SECONDS, Daemon, wait_for
from tests.fixtures_audio import fixture_path
from tests.webhook_receiver import Receiver, free_port

GOOD_SECRET = "e2e-receiver-shares-this-secret"  # noqa: S105 - a test key
WRONG_SECRET = "e2e-a-secret-the-receiver-does-not-know"  # noqa: S105 - a test key


def secret_file(folder: Path, name: str, value: str) -> Path:
    path = folder / name
    path.write_text(value + "\n", encoding="utf-8")
    path.chmod(0o600)
    return path


def one_refused_left(daemon: Daemon) -> list[dict[str, object]] | None:
    """The undelivered events `status` shows, once only the refused one is left."""
    undelivered: list[dict[str, object]] = daemon.status()["webhooks_undelivered"]
    if len(undelivered) == 1 and undelivered[0]["last_error"] == "HTTP 401":
        return undelivered
    return None


def test_events_wait_in_the_outbox_through_a_kill_and_reach_the_receiver_once_it_is_up(
    make_daemon: Callable[..., Daemon], inbox: Path, tmp_path: Path
) -> None:
    port = free_port()  # nothing listens there yet: the receiver is down
    base = f"http://127.0.0.1:{port}"
    daemon = make_daemon(
        webhooks=[
            {"url": f"{base}/good", "secret_file": str(secret_file(tmp_path, "good", GOOD_SECRET))},
            {"url": f"{base}/bad", "events": ["done"],
             "secret_file": str(secret_file(tmp_path, "wrong", WRONG_SECRET))},
        ],
    )  # fmt: skip
    receiver = Receiver(port, {"/good": GOOD_SECRET.encode(), "/bad": GOOD_SECRET.encode()})
    with daemon.start():
        shutil.copy(fixture_path("mono.ogg"), inbox / "call.ogg")
        wait_for((inbox / "call.json").exists, "call.json")
        wait_for(lambda: daemon.log().count("failed: cannot connect") >= 2,
                 "both deliveries to fail while the receiver is down")  # fmt: skip
        report = daemon.status()
        waiting = {item["receiver"]: item for item in report["webhooks_undelivered"]}
        assert len(report["webhooks_undelivered"]) == 2
        assert set(waiting) == {base}
        assert all(item["last_error"] == "cannot connect" for item in waiting.values())
        assert all(item["event"] == "done" for item in report["webhooks_undelivered"])
        text_status = daemon.cli("status").stdout
        assert "webhook events not delivered yet:" in text_status
        daemon.kill()  # SIGKILL between the file's end and any delivery
    ids_before = {item["delivery_id"] for item in report["webhooks_undelivered"]}
    with receiver:
        receiver.fail_next = 1  # the first good request is answered 503: retried, same id
        receiver.start()
        with daemon.start():
            wait_for(lambda: receiver.requests("/good", 200), "the receiver to take the event")
            wait_for(lambda: receiver.requests("/bad"), "the wrongly signed event to arrive")
            # The receiver answers before the daemon records it: wait for that record.
            remaining = wait_for(
                lambda: one_refused_left(daemon),
                "the delivered event to leave the outbox and the refused one to show HTTP 401",
                poll=STATUS_POLL_SECONDS,
            )
            assert daemon.stop() == 0
    good = receiver.requests("/good")
    assert [each.answered for each in good] == [503, 200]
    delivery_ids = {each.headers["X-Speechkit-Watch-Delivery"] for each in good}
    assert len(delivery_ids) == 1
    assert delivery_ids <= ids_before  # the id `status` showed before the kill
    assert good[0].body == good[1].body
    event = json.loads(good[1].body)
    assert event["event"] == event["result"] == "done"
    assert event["audio"] == str(inbox / "call.ogg")
    assert event["outputs"] == {"txt": str(inbox / "call.txt"), "json": str(inbox / "call.json")}
    assert event["operation_id"].startswith("e03")
    assert event["language"] == "ru-RU"
    assert event["duration_seconds"] > 0
    assert event["delivery_id"] in delivery_ids
    # The receiver's check refuses what was signed with another secret; it stays undelivered.
    bad = receiver.requests("/bad")
    assert bad
    assert all(each.answered == 401 for each in bad)
    [left] = remaining  # the good one was taken; the refused one waits for a retry
    assert left["last_error"] == "HTTP 401"
    assert left["delivery_id"] in ids_before - delivery_ids
    log = daemon.log()
    assert f"webhook done delivered to {base}" in log
    for secret in (GOOD_SECRET, WRONG_SECRET):
        assert secret not in log
        assert secret not in json.dumps(remaining)
    assert "/good" not in log  # receivers are named by host and port only
    assert "Traceback" not in log


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(url, timeout=10) as answer:  # noqa: S310 - our own http URL
        text = answer.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_a_scrape_before_and_after_a_batch(make_daemon: Callable[..., Daemon], inbox: Path) -> None:
    listen = f"127.0.0.1:{free_port()}"
    url = f"http://{listen}/metrics"
    with make_daemon(metrics={"listen": listen}).start() as daemon:
        before = scrape(url)
        assert before[("speechkit_watch_oldest_waiting_seconds", ())] == 0
        assert before[("speechkit_watch_uploaded_bytes_total", ())] == 0
        assert ("speechkit_watch_files_total", (("result", "done"),)) not in before
        names = ("mono.ogg", "stereo.ogg", "unicode.ogg")
        for name in names:
            shutil.copy(fixture_path(name), inbox / name)
        wait_for(lambda: all((inbox / name).with_suffix(".json").exists() for name in names),
                 "the batch to be transcribed")  # fmt: skip
        done = ("speechkit_watch_files_total", (("result", "done"),))
        after = wait_for(lambda: (found := scrape(url)).get(done) == 3 and found, "3 done")
        assert daemon.stop() == 0
    sizes = sum(fixture_path(name).stat().st_size for name in names)
    assert after[("speechkit_watch_uploaded_bytes_total", ())] == sizes
    assert after[("speechkit_watch_api_calls_total", (("call", "submit"),))] == 3
    assert after[("speechkit_watch_api_calls_total", (("call", "check"),))] >= 3
    assert after[("speechkit_watch_quota_used", (("call", "submit"),))] == 3
    assert after[("speechkit_watch_processing_seconds_count", (("result", "done"),))] == 3
    for state_name in ("queued", "uploading", "submitting", "pending"):
        assert after[("speechkit_watch_backlog_files", (("state", state_name),))] == 0
    assert "serving Prometheus metrics at http://" + listen in daemon.log()
