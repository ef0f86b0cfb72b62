"""Every Prometheus metric hookd exports, defined once on hookd's own registry.

Labels are bounded: outcome, status class, wake-up source. Never URLs, paths or ids.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

import hookd
from hookd.classify import STATUS_CLASSES

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


WAKE_SOURCES = ("notify", "probe", "recheck", "timer", "signal", "poll")
"""Why the claim loop looked for work (hookd/wakeups.py sets them)."""


class Metrics:
    """The metric objects of one daemon, on their own registry (tests may build several)."""

    def __init__(self, max_host_labels: int = MAX_HOST_LABELS) -> None:
        self._hosts: dict[str, str] = {}
        self._max_hosts = max_host_labels
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
            "hookd_outbox_backlog_events", "Events waiting to be fanned out.", registry=r
        )
        self.deliveries_open = Gauge(
            "hookd_deliveries_open",
            "Deliveries not yet delivered, by state.",
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
            label = host if len(self._hosts) < self._max_hosts else "other"
            self._hosts[host] = label
        return label
