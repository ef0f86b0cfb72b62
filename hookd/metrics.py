"""Every Prometheus metric hookd exports, defined once on hookd's own registry.

Labels are bounded: outcome, status class, wake-up source; `host` for the first
`MAX_HOST_LABELS` hosts and `endpoint` (the endpoint id) for the first `[admin]
max_endpoint_labels` endpoints attempted, the rest sharing "other". Never URLs or paths.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
)

import hookd
from hookd.classify import STATUS_CLASSES

# No `*_created` series (the time each counter and histogram was created): they double the
# series per labelled endpoint and nothing reads them (rate() needs only the counters).
disable_created_metrics()  # type: ignore[no-untyped-call]  # prometheus_client leaves it unannotated

_LATENCY_BUCKETS_S = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
)
_LAG_BUCKETS_S = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    300,
    1800,
    7200,
    36000,
)


MAX_HOST_LABELS = 20
"""Hosts that get their own `host` label value; the rest share "other"."""

MAX_ENDPOINT_LABELS = 50
"""Endpoints that get their own `endpoint` label value by default (`[admin] max_endpoint_labels`);
the rest share "other"."""

OTHER = "other"
"""The label value shared by the hosts and endpoints beyond their limit."""

ENDPOINT_OUTCOMES = ("delivered", "failed")
"""Outcomes counted per endpoint: delivered, and failed (dead-lettered)."""


WAKE_SOURCES = ("notify", "probe", "recheck", "timer", "signal", "poll")
"""Why the claim loop looked for work (hookd/wakeups.py sets them)."""


class Metrics:
    """The metric objects of one daemon, on their own registry (tests may build several)."""

    def __init__(
        self, max_host_labels: int = MAX_HOST_LABELS, max_endpoint_labels: int = MAX_ENDPOINT_LABELS
    ) -> None:
        self._hosts: dict[str, str] = {}
        self._max_hosts = max_host_labels
        self._endpoints: dict[int, EndpointSeries] = {}
        self._labelled_endpoints = 0
        self._max_endpoints = max_endpoint_labels
        self._other_endpoints: EndpointSeries | None = None
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.build_info = Info("hookd_build", "hookd version.", registry=r)
        self.build_info.info({"version": hookd.__version__})
        self.claims = Counter(
            "hookd_claim_queries_total",
            "Claim queries run, by kind (fan_out: new events; due: retries and expired leases).",
            ["kind"],
            registry=r,
        )
        self.events_claimed = Counter(
            "hookd_events_claimed_total", "Events taken from the outbox and fanned out.", registry=r
        )
        self.deliveries = Counter(
            "hookd_deliveries_total",
            "Delivery outcomes written back, by outcome.",
            ["outcome"],
            registry=r,
        )
        self.attempts = Counter(
            "hookd_attempts_total",
            "HTTP attempts by result class (2xx, 3xx, 4xx, 5xx, timeout, connect_error, "
            "refused_destination).",
            ["status_class"],
            registry=r,
        )
        self.attempt_duration = Histogram(
            "hookd_attempt_duration_seconds",
            "Duration of HTTP attempts.",
            buckets=_LATENCY_BUCKETS_S,
            registry=r,
        )
        self.lag = Histogram(
            "hookd_delivery_lag_seconds",
            "Time from publish to a 2xx answer.",
            buckets=_LAG_BUCKETS_S,
            registry=r,
        )
        self.in_flight = Gauge(
            "hookd_deliveries_in_flight", "Deliveries held by this process.", registry=r
        )
        self.requests_in_flight = Gauge(
            "hookd_requests_in_flight",
            f"HTTP requests being sent now, by host (the first {max_host_labels} hosts seen; the "
            "rest as other).",
            ["host"],
            registry=r,
        )
        self.outbox_backlog = Gauge(
            "hookd_outbox_backlog_events",
            "Events waiting to be fanned out (above 10,000: PostgreSQL's estimate).",
            registry=r,
        )
        self.deliveries_open = Gauge(
            "hookd_deliveries_open",
            "Deliveries not yet delivered, by state (above 10,000: PostgreSQL's estimate).",
            ["state"],
            registry=r,
        )
        self.oldest_pending = Gauge(
            "hookd_oldest_pending_delivery_age_seconds",
            "Age of the oldest pending delivery (0 when none).",
            registry=r,
        )
        self.retry_timers = Gauge(
            "hookd_retry_timers", "Retries waiting in this process's timer wheel.", registry=r
        )
        self.open_breakers = Gauge(
            "hookd_circuit_breakers_open", "Endpoints whose circuit breaker is open.", registry=r
        )
        self.disabled_endpoints = Gauge(
            "hookd_endpoints_disabled", "Endpoints that are disabled.", registry=r
        )
        self.up = Gauge(
            "hookd_ready", "1 while the database answers and LISTEN is active, else 0.", registry=r
        )
        self.wakeups = Counter(
            "hookd_wakeups_total",
            "Claim-loop wake-ups by source: notify, probe (an outbox probe found events), recheck,"
            " timer (due retry, breaker cool-down), signal (room freed, retry planned, reconnect),"
            " poll (the polling fallback).",
            ["source"],
            registry=r,
        )
        self.endpoint_attempts = Counter(
            "hookd_endpoint_attempts_total",
            "HTTP attempts per endpoint by result class; `endpoint` is the endpoint id for the "
            "first [admin] max_endpoint_labels endpoints attempted, other for the rest.",
            ["endpoint", "status_class"],
            registry=r,
        )
        self.endpoint_deliveries = Counter(
            "hookd_endpoint_deliveries_total",
            "Deliveries ended per endpoint: delivered, or failed (dead-lettered).",
            ["endpoint", "outcome"],
            registry=r,
        )
        self.endpoint_consecutive_failures = Gauge(
            "hookd_endpoint_consecutive_failures",
            "Failed attempts of an endpoint since its last success (for other: the most of any).",
            ["endpoint"],
            registry=r,
        )
        self.listener_reconnects = Counter(
            "hookd_listener_reconnects_total", "LISTEN connection replaced.", registry=r
        )
        self.internal_errors = Counter(
            "hookd_internal_errors_total",
            "Unexpected errors caught at task boundaries.",
            registry=r,
        )
        self.db_errors = Counter(
            "hookd_database_errors_total", "Failed database operations.", registry=r
        )
        self.retention_last_success = Gauge(
            "hookd_retention_last_success_timestamp_seconds",
            "Unix time of this process's last completed retention step (0: none yet).",
            registry=r,
        )
        self.history_partitions_dropped = Counter(
            "hookd_history_partitions_dropped_total",
            "Day partitions of the history dropped by retention.",
            registry=r,
        )
        for outcome in ("delivered", "retry_scheduled", "failed", "paused"):
            self.deliveries.labels(outcome)
        # Every known label value starts at 0, so rates and ratios have data before the first
        # failure (a series that appears only on its first increment hides that increment).
        for status_class in sorted(STATUS_CLASSES):
            self.attempts.labels(status_class)
        for source in WAKE_SOURCES:
            self.wakeups.labels(source)
        for kind in ("fan_out", "due"):
            self.claims.labels(kind)
        for state in ("pending", "paused", "failed"):
            self.deliveries_open.labels(state)

    def host(self, host: str) -> str:
        """The bounded `host` label value for `host`."""
        label = self._hosts.get(host)
        if label is None:
            label = host if len(self._hosts) < self._max_hosts else OTHER
            self._hosts[host] = label
        return label

    def limit_endpoint_labels(self, max_endpoint_labels: int) -> None:
        """Apply `[admin] max_endpoint_labels` (at start and on reload): endpoints seen from now
        on get their own label while fewer than this many have one; those already labelled (or
        already "other") keep theirs until the endpoint is forgotten or the process restarts."""
        self._max_endpoints = max_endpoint_labels

    def endpoint(self, endpoint_id: int) -> EndpointSeries:
        """The per-endpoint series of `endpoint_id`: its own while fewer than the limit have one,
        else the shared "other" ones. Every series of a new label value starts at 0."""
        series = self._endpoints.get(endpoint_id)
        if series is None:
            if self._labelled_endpoints < self._max_endpoints:
                series = EndpointSeries(self, str(endpoint_id), shared=False)
                self._labelled_endpoints += 1
            else:
                if self._other_endpoints is None:
                    self._other_endpoints = EndpointSeries(self, OTHER, shared=True)
                series = self._other_endpoints
            self._endpoints[endpoint_id] = series
        return series

    def forget_endpoint(self, endpoint_id: int) -> None:
        """An endpoint was deleted: drop its series (a label slot is free again) or its share of
        "other"."""
        series = self._endpoints.pop(endpoint_id, None)
        if series is None:
            return
        if series.shared:
            series.set_consecutive_failures(endpoint_id, 0)
            return
        self._labelled_endpoints -= 1
        for status_class in sorted(STATUS_CLASSES):
            self.endpoint_attempts.remove(series.label, status_class)
        for outcome in ENDPOINT_OUTCOMES:
            self.endpoint_deliveries.remove(series.label, outcome)
        self.endpoint_consecutive_failures.remove(series.label)


class EndpointSeries:
    """The per-endpoint metric children of one `endpoint` label value, looked up once.

    `attempts[status_class]` and `delivered` / `failed` are counters to increment;
    `set_consecutive_failures` sets the gauge (for the shared "other" value: the highest figure
    of the endpoints sharing it).
    """

    __slots__ = ("_by_endpoint", "_gauge", "_max", "attempts", "delivered", "failed", "label")

    def __init__(self, metrics: Metrics, label: str, *, shared: bool) -> None:
        self.label = label
        self.attempts = {
            c: metrics.endpoint_attempts.labels(label, c) for c in sorted(STATUS_CLASSES)
        }
        self.delivered = metrics.endpoint_deliveries.labels(label, "delivered")
        self.failed = metrics.endpoint_deliveries.labels(label, "failed")
        self._gauge = metrics.endpoint_consecutive_failures.labels(label)
        self._by_endpoint: dict[int, int] | None = {} if shared else None
        """For "other": the endpoints sharing it that are failing now, and their figures."""
        self._max = 0

    @property
    def shared(self) -> bool:
        """True for the "other" series, shared by the endpoints beyond the limit."""
        return self._by_endpoint is not None

    def set_consecutive_failures(self, endpoint_id: int, failures: int) -> None:
        """Record that `endpoint_id` has failed `failures` times in a row (0: it succeeded)."""
        by_endpoint = self._by_endpoint
        if by_endpoint is None:
            self._gauge.set(failures)
            return
        before = by_endpoint.pop(endpoint_id, 0)
        if failures:
            by_endpoint[endpoint_id] = failures
        if failures >= self._max:
            self._max = failures
        elif before == self._max:
            # The worst one got better: look for the new worst (only then, not per attempt).
            self._max = max(by_endpoint.values(), default=0)
        else:
            return
        self._gauge.set(self._max)
