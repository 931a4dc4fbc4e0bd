"""Prometheus metrics: counters the steps bump as things happen, and gauges read from the state
file when Prometheus scrapes (`StateCollector`), so nothing polls between scrapes.

The counters live in a registry of our own and cost a few nanoseconds each whether or not the
endpoint is on; `serve` opens the endpoint only when `metrics.listen` is configured. Counters
start from zero at each start of the daemon (Prometheus' `rate()` and `increase()` expect that).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from daemon import state

PREFIX = "speechkit_watch"
# From a file found to its end: seconds for small files, hours for a quota backlog.
PROCESSING_BUCKETS = (5, 15, 30, 60, 120, 300, 600, 1800, 3600, 3 * 3600, 12 * 3600, 24 * 3600)

COUNTERS = CollectorRegistry(auto_describe=True)
FILES = Counter(
    f"{PREFIX}_files", "Files that ended, by result (done, failed)", ["result"],
    registry=COUNTERS,
)  # fmt: skip
API_CALLS = Counter(
    f"{PREFIX}_api_calls",
    "Recognition API calls made, by call: submit (longRunningRecognize), check (status check)",
    ["call"], registry=COUNTERS,
)  # fmt: skip
ERRORS = Counter(
    f"{PREFIX}_errors",
    "Failed calls to the recognition API or storage, by service and kind "
    "(transient, auth, permanent, not_found, ambiguous, not_the_api)",
    ["service", "kind"], registry=COUNTERS,
)  # fmt: skip
UPLOADED_BYTES = Counter(
    f"{PREFIX}_uploaded_bytes", "Bytes uploaded to object storage", registry=COUNTERS
)
PROCESSING = Histogram(
    f"{PREFIX}_processing_seconds", "Seconds from a file found to its end, by result",
    ["result"], buckets=PROCESSING_BUCKETS, registry=COUNTERS,
)  # fmt: skip
CREDENTIAL_PAUSES = Counter(
    f"{PREFIX}_credential_pauses",
    "Pauses begun because a service refused our credentials, by service",
    ["service"], registry=COUNTERS,
)  # fmt: skip
WEBHOOK_DELIVERIES = Counter(
    f"{PREFIX}_webhook_deliveries",
    "Webhook delivery attempts by outcome: delivered, failed (retried later), given_up",
    ["result"], registry=COUNTERS,
)  # fmt: skip


def file_ended(result: str, seconds: float) -> None:
    FILES.labels(result=result).inc()
    PROCESSING.labels(result=result).observe(max(0.0, seconds))


def api_call(call: str) -> None:
    API_CALLS.labels(call=call).inc()


def error(service: str, kind: str) -> None:
    ERRORS.labels(service=service, kind=kind).inc()


def uploaded(size: int) -> None:
    UPLOADED_BYTES.inc(size)


def credential_pause(service: str) -> None:
    CREDENTIAL_PAUSES.labels(service=service).inc()


def webhook_delivery(result: str) -> None:
    WEBHOOK_DELIVERIES.labels(result=result).inc()


class StateCollector(Collector):
    """Gauges computed at scrape time: a few indexed queries of the state file."""

    def __init__(
        self,
        store: state.Store,
        *,
        clock: Callable[[], float],
        quota_limits: Callable[[], Mapping[str, int]],
        paused: Callable[[], Mapping[str, bool]],
        per_second_limits: Callable[[], Mapping[str, int]] = dict,
    ) -> None:
        self.store = store
        self.clock = clock
        self.quota_limits = quota_limits  # call -> calls allowed per hour (the config's, now)
        # call -> calls allowed per second, for calls paced per second (API v3's status checks)
        self.per_second_limits = per_second_limits
        self.paused = paused  # service -> whether it is paused for refused credentials

    def collect(self) -> Iterator[Metric]:
        now = self.clock()
        counts = self.store.counts()
        backlog = GaugeMetricFamily(
            f"{PREFIX}_backlog_files", "Files not finished yet, by state", labels=["state"]
        )
        for name in state.ACTIVE_STATES:
            backlog.add_metric([str(name)], counts[name])
        yield backlog
        oldest = self.store.oldest_waiting_since()
        yield GaugeMetricFamily(
            f"{PREFIX}_oldest_waiting_seconds",
            "Age of the oldest file not finished yet (0 when none waits)",
            value=0.0 if oldest is None else max(0.0, now - oldest),
        )
        used = GaugeMetricFamily(
            f"{PREFIX}_quota_used", "API calls made in the last hour, by call", labels=["call"]
        )
        limit = GaugeMetricFamily(
            f"{PREFIX}_quota_limit", "API calls allowed per hour, by call", labels=["call"]
        )
        per_second = GaugeMetricFamily(
            f"{PREFIX}_quota_limit_per_second",
            "API calls allowed per second, by call (API v3's status checks)",
            labels=["call"],
        )
        hourly, each_second = self.quota_limits(), self.per_second_limits()
        for call in sorted({*hourly, *each_second}):
            used.add_metric([call], self.store.calls_since(call, now - 3600.0))
            if call in hourly:
                limit.add_metric([call], hourly[call])
            if call in each_second:
                per_second.add_metric([call], each_second[call])
        yield used
        yield limit
        yield per_second
        paused = GaugeMetricFamily(
            f"{PREFIX}_credentials_paused",
            "1 while calls to the service are paused because it refused our credentials",
            labels=["service"],
        )
        for service, is_paused in self.paused().items():
            paused.add_metric([service], 1.0 if is_paused else 0.0)
        yield paused
        yield GaugeMetricFamily(
            f"{PREFIX}_webhook_undelivered",
            "Webhook events waiting in the outbox for a receiver to take them",
            value=self.store.undelivered_count(),
        )


def registry(collector: StateCollector) -> CollectorRegistry:
    """Everything the endpoint exports: the counters and the state file's gauges."""
    exported = CollectorRegistry(auto_describe=False)
    exported.register(COUNTERS)
    exported.register(collector)
    return exported


def parse_listen(listen: str) -> tuple[str, int]:
    """`HOST:PORT` (validated by the config) as (host, port); `[::1]:9464` for IPv6."""
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


def serve(listen: str, collector: StateCollector) -> None:
    """Open the endpoint (`/metrics`, any path in fact) in a daemon thread of its own.
    OSError when the address cannot be bound."""
    host, port = parse_listen(listen)
    start_http_server(port, addr=host, registry=registry(collector))
