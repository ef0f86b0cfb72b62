"""What the dispatcher keeps per endpoint while running: origin, signer, limits, breaker, policy."""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from datetime import datetime

from hookd.auth import OAuthClient, ssl_context, static_headers, validate_credentials
from hookd.breaker import CircuitBreaker
from hookd.config import Config
from hookd.endpoints import validate_settings
from hookd.errors import InvalidEndpoint
from hookd.hostpool import Origin
from hookd.limits import AdaptiveLimit
from hookd.models import Endpoint
from hookd.retry import RetryPolicy
from hookd.signing import InvalidSecret, Signer

LEASE_MARGIN_S = 2.0
"""Seconds of lease kept free after the longest attempt (the outcome still has to be written)."""


@dataclass(eq=False, slots=True)
class EndpointRuntime:
    """An endpoint plus its live state. `problem` is set when it cannot be sent to at all."""

    endpoint: Endpoint
    origin: Origin | None
    signer: Signer | None = field(repr=False)
    policy: RetryPolicy
    limit: AdaptiveLimit
    breaker: CircuitBreaker
    connect_timeout_s: float
    total_timeout_s: float
    problem: str | None = None
    final_statuses: frozenset[int] = frozenset()
    """Statuses that end a delivery at once (`http.final_statuses` or the endpoint's override)."""
    final_statuses_setting: str = "http.final_statuses"
    """Where `final_statuses` comes from, for the attempt log."""
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    """Authentication and custom headers sent with every request."""
    ssl: ssl.SSLContext | None = field(default=None, repr=False)
    oauth: OAuthClient | None = field(default=None, repr=False)
    held: int = 0
    """Deliveries of this endpoint held by this process (queued or sending)."""
    sending: int = 0
    """Requests of this endpoint in flight now (at most `limit.limit`)."""
    disabled: bool = False
    """Disabled while running (410 Gone), before the endpoint cache is reloaded."""
    deleted: bool = False
    """Gone from the database while some of its deliveries were still held."""
    backlog: bool = False
    """Due deliveries probably wait for it in the database (a fan-out left some unleased, a due
    claim filled its whole room, a give-back): a freed slot should trigger a due claim."""

    @classmethod
    def build(cls, ep: Endpoint, cfg: Config) -> EndpointRuntime:
        """Runtime state for a newly seen endpoint."""
        rt = cls(
            ep,
            None,
            None,
            cfg.retry.policy(),
            AdaptiveLimit(cfg.http.per_endpoint_limit),
            CircuitBreaker(cfg.breaker.settings()),
            cfg.http.connect_timeout_s,
            cfg.http.total_timeout_s,
        )
        rt.update(ep, cfg)
        return rt

    def update(self, ep: Endpoint, cfg: Config) -> None:
        """Apply a changed endpoint row (URL, secret, settings) while keeping live state."""
        self.endpoint = ep
        self.disabled = False
        self.problem = None
        try:
            self.origin = Origin.of(ep.url)
            self.signer = Signer(ep.secret)
            creds = validate_credentials(ep.credentials or {})
            self.headers = static_headers(creds)
            self.ssl = ssl_context(creds)
            self.oauth = OAuthClient(creds["oauth2"]) if "oauth2" in creds else None
            s = validate_settings(ep.settings)
            self.policy = cfg.retry.policy().with_overrides(
                **{
                    field: s[key]
                    for key, field in (
                        ("retry_schedule_s", "schedule_s"),
                        ("retry_max_attempts", "max_attempts"),
                        ("retry_max_age_s", "max_age_s"),
                        ("retry_jitter", "jitter"),
                    )
                    if key in s
                }
            )
        except (ValueError, InvalidSecret, InvalidEndpoint) as exc:
            self.problem = str(exc)
            return
        self.limit.set_ceiling(s.get("max_concurrency", cfg.http.per_endpoint_limit))
        self.connect_timeout_s = s.get("connect_timeout_s", cfg.http.connect_timeout_s)
        if "final_statuses" in s:
            self.final_statuses = frozenset(s["final_statuses"])
            self.final_statuses_setting = f"endpoint {ep.id} setting final_statuses"
        else:
            self.final_statuses = frozenset(cfg.http.final_statuses)
            self.final_statuses_setting = "http.final_statuses"
        # An attempt must end well inside the lease, or the delivery could never be sent.
        lease_bound = cfg.daemon.lease_s - cfg.daemon.flush_interval_s - LEASE_MARGIN_S
        self.total_timeout_s = min(s.get("total_timeout_s", cfg.http.total_timeout_s), lease_bound)
        if self.connect_timeout_s > self.total_timeout_s:
            self.connect_timeout_s = self.total_timeout_s

    def signer_at(self, now: datetime) -> Signer:
        """The signer for an attempt at `now`: also the previous secret during its grace period."""
        # Secrets decrypt when read (hookd/models.py): outside a grace period, the signer built
        # once per endpoint version serves, with no decryption per attempt.
        if self.signer is not None and not self.endpoint.in_grace(now):
            return self.signer
        return Signer(self.endpoint.secrets_at(now))

    @property
    def sendable(self) -> bool:
        """Enabled, with a valid URL, secret and settings."""
        return self.endpoint.enabled and not self.disabled and self.problem is None
