"""The metrics the endpoint exports, read from a real state file at scrape time, and the sample
alert rules in deploy/prometheus/alerts.yml, which may name only metrics that exist."""

from __future__ import annotations

import http.server
import re
import socket
import threading
from pathlib import Path

import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from daemon import checks, metrics, state

ALERTS = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "alerts.yml"
NOW = 1_800_000_000.0
# Series Prometheus makes itself for every target, not the daemon.
PROMETHEUS_OWN = {"up"}
_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def scrape(store: state.Store, paused: bool = False) -> str:
    collector = metrics.StateCollector(
        store, clock=lambda: NOW, quota_limits=lambda: {"submit": 500, "check": 2500},
        paused=lambda: {"recognition API": paused, "storage": False},
    )  # fmt: skip
    return generate_latest(metrics.registry(collector)).decode()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def exported_names(text: str) -> set[str]:
    """Every series name the endpoint can export, samples or not yet (a labelled counter has
    none until it first counts)."""
    names = set()
    for family in text_string_to_metric_families(text):
        names |= {family.name + suffix for suffix in _SUFFIXES.get(family.type, ("",))}
    return names


def test_state_gauges_are_read_from_the_state_file_at_scrape_time(tmp_path: Path) -> None:
    store = state.Store(tmp_path / "state.db")
    try:
        first = store.add_version(path="/in/a.ogg", folder="/in", size=1, mtime_ns=1,
                                  now=NOW - 600)  # fmt: skip
        store.add_version(path="/in/b.ogg", folder="/in", size=1, mtime_ns=1, now=NOW - 60)
        store.update(first, NOW, state=state.UPLOADING)
        store.record_call("submit", NOW - 10)
        found = samples(scrape(store, paused=True))
        assert found[("speechkit_watch_backlog_files", (("state", "queued"),))] == 1
        assert found[("speechkit_watch_backlog_files", (("state", "uploading"),))] == 1
        assert found[("speechkit_watch_backlog_files", (("state", "pending"),))] == 0
        assert found[("speechkit_watch_oldest_waiting_seconds", ())] == 600
        assert found[("speechkit_watch_quota_used", (("call", "submit"),))] == 1
        assert found[("speechkit_watch_quota_limit", (("call", "check"),))] == 2500
        paused = ("speechkit_watch_credentials_paused", (("service", "recognition API"),))
        assert found[paused] == 1
        assert found[("speechkit_watch_webhook_undelivered", ())] == 0
        # Nothing waits any more: the gauges follow the state file, no restart, no polling.
        store.update(first, NOW, state=state.GONE)
        store.add_version(path="/in/b.ogg", folder="/in", size=2, mtime_ns=2, now=NOW)
        later = samples(scrape(store))
        assert later[("speechkit_watch_backlog_files", (("state", "uploading"),))] == 0
        assert later[("speechkit_watch_oldest_waiting_seconds", ())] == 0
    finally:
        store.close()


def test_counters_count_what_the_steps_report(tmp_path: Path) -> None:
    store = state.Store(tmp_path / "state.db")
    try:
        before = samples(scrape(store))
        metrics.file_ended("failed", 42.0)
        metrics.uploaded(1000)
        metrics.error("storage", "transient")
        after = samples(scrape(store))
    finally:
        store.close()
    failed = ("speechkit_watch_files_total", (("result", "failed"),))
    assert after[failed] == before.get(failed, 0) + 1
    uploaded = ("speechkit_watch_uploaded_bytes_total", ())
    assert after[uploaded] == before[uploaded] + 1000
    errors = ("speechkit_watch_errors_total", (("kind", "transient"), ("service", "storage")))
    assert after[errors] == before.get(errors, 0) + 1
    bucket = ("speechkit_watch_processing_seconds_bucket", (("le", "60.0"), ("result", "failed")))
    assert after[bucket] == before.get(bucket, 0) + 1


def test_alert_rules_parse_and_name_only_exported_metrics(tmp_path: Path) -> None:
    document = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    rules = [rule for group in document["groups"] for rule in group["rules"]]
    alerts = {rule["alert"]: rule["expr"] for rule in rules}
    store = state.Store(tmp_path / "state.db")
    try:
        exported = exported_names(scrape(store))
    finally:
        store.close()
    assert "speechkit_watch_files_total" in exported
    assert "speechkit_watch_processing_seconds_bucket" in exported
    assert len(alerts) >= 3
    assert any("backlog" in expr for expr in alerts.values())
    assert any('result="failed"' in expr for expr in alerts.values())
    assert any("credentials_paused" in expr for expr in alerts.values())
    for name, expr in alerts.items():
        without_strings = re.sub(r'"[^"]*"', '""', expr)
        named = set(re.findall(r"\b(speechkit_watch_\w+|up)\b", without_strings))
        assert named, f"alert {name} names no metric"
        unknown = named - exported - PROMETHEUS_OWN
        assert not unknown, f"alert {name} names metrics the endpoint does not export: {unknown}"


def test_check_says_whether_the_endpoint_can_listen_and_names_the_key(tmp_path: Path) -> None:
    with socket.socket() as holder:  # another program on the port
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        taken = checks.check_metrics(f"127.0.0.1:{port}")
        assert not taken.passed
        assert f"cannot listen on 127.0.0.1:{port}" in taken.message
        assert "check metrics.listen" in taken.message
    free = checks.check_metrics(f"127.0.0.1:{port}")
    assert free.passed
    assert free.message == f"metrics: the endpoint can listen on 127.0.0.1:{port}"


def test_check_accepts_the_port_of_a_running_daemons_endpoint(tmp_path: Path) -> None:
    store = state.Store(tmp_path / "state.db")

    class Endpoint(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = scrape(store).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Endpoint)
    serving = threading.Thread(target=server.serve_forever, daemon=True)
    serving.start()
    try:
        listen = f"127.0.0.1:{server.server_address[1]}"
        result = checks.check_metrics(listen)
        assert result.passed
        assert result.message == f"metrics: {listen} is served by a running speechkit-watch"
    finally:
        server.shutdown()
        server.server_close()
        store.close()
