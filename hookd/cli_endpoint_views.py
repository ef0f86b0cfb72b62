"""`hookd endpoint list` and `hookd endpoint show`: endpoints as tables or JSON (secrets masked,
the effective settings, authentication by kind only, breaker, attempt statistics), through the
operating service as an operator.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson

from hookd import config
from hookd.cli_common import (
    OPERATOR,
    _print_json,
    _time,
    _with_service,
)
from hookd.models import Endpoint, WindowStats
from hookd.secretbox import MissingSecretKey
from hookd.service import (
    MAX_PAGE_SIZE,
    PageRequest,
    Service,
)


def _mask(ep: Endpoint) -> str:
    """Only the kind of an endpoint's secret, never any of its characters; "encrypted" when no key
    is configured to read it (showing no secret needs no key)."""
    try:
        secret = ep.secret
    except MissingSecretKey:
        return "encrypted"
    return secret.split("_", 1)[0] + "_…" if "_" in secret else "…"


def _signature(ep: Endpoint) -> str:
    """The signature scheme of an endpoint's secret (unknown when no key is configured)."""
    try:
        return "ed25519 (v1a)" if ep.secret.startswith("whsk_") else "hmac (v1)"
    except MissingSecretKey:
        return "(unknown: no key configured)"


async def _all_endpoints(service: Service) -> list[Endpoint]:
    """Every endpoint, by id (all pages)."""
    found: list[Endpoint] = []
    page = PageRequest(limit=MAX_PAGE_SIZE)
    while True:
        got = await service.list_endpoints(OPERATOR, page)
        found += got.items
        if got.next_before_id is None:
            return sorted(found, key=lambda e: e.id)
        page = PageRequest(limit=MAX_PAGE_SIZE, before_id=got.next_before_id)


async def cmd_endpoint_list(args: argparse.Namespace) -> int:
    async def go(service: Service, cfg: config.Config) -> int:
        eps = await _all_endpoints(service)
        if args.json:
            rows = [
                {
                    "id": e.id,
                    "url": e.url,
                    "tenant": e.tenant,
                    "event_types": list(e.event_types),
                    "filter": e.payload_filter,
                    "enabled": e.enabled,
                    "disabled_reason": e.disabled_reason,
                    "description": e.description,
                    "secret": _mask(e),
                }
                for e in eps
            ]
            print(orjson.dumps(rows).decode())
            return 0
        print(f"{'id':>5}  {'enabled':7}  {'tenant':12}  {'event types':24}  {'secret':12}  url")
        for e in eps:
            print(
                f"{e.id:>5}  {'yes' if e.enabled else 'no':7}  {e.tenant or '-':12}  "
                f"{','.join(e.event_types):24}  {_mask(e):12}  {e.url}"
            )
        return 0

    return await _with_service(args, go)


_EFFECTIVE: dict[str, Callable[[config.Config], Any]] = {
    "connect_timeout_s": lambda c: c.http.connect_timeout_s,
    "total_timeout_s": lambda c: c.http.total_timeout_s,
    "max_concurrency": lambda c: c.http.per_endpoint_limit,
    "retry_schedule_s": lambda c: list(c.retry.schedule_s),
    "retry_max_attempts": lambda c: c.retry.max_attempts,
    "retry_max_age_s": lambda c: c.retry.max_age_s,
    "retry_jitter": lambda c: c.retry.jitter,
    "final_statuses": lambda c: list(c.http.final_statuses),
}
"""Where each per-endpoint override's configured default comes from."""


def _auth_kinds(ep: Endpoint) -> list[str]:
    """How hookd authenticates to the endpoint, by kind only (never a credential)."""
    try:
        creds = ep.credentials or {}
    except MissingSecretKey:
        return ["encrypted (no key configured to read the kinds)"] if ep.stored_credentials else []
    kinds = [k for k in ("basic", "bearer", "oauth2") if k in creds]
    if "headers" in creds:
        kinds.append("headers (" + ", ".join(sorted(creds["headers"])) + ")")
    tls = creds.get("tls") or {}
    if "client_cert" in tls:
        kinds.append("mTLS client certificate")
    if "ca_bundle" in tls:
        kinds.append("custom CA bundle")
    return kinds


async def cmd_endpoint_show(args: argparse.Namespace) -> int:
    async def go(service: Service, cfg: config.Config) -> int:
        ep = await service.get_endpoint(OPERATOR, args.id)
        stats = await service.endpoint_stats(OPERATOR, args.id)
        now = datetime.now(UTC)
        breaker = (
            f"open until {_time(ep.breaker_open_until)}"
            if ep.breaker_open_until is not None and ep.breaker_open_until > now
            else "closed"
        )
        effective = {k: ep.settings.get(k, f(cfg)) for k, f in _EFFECTIVE.items()}
        data = {
            "id": ep.id,
            "url": ep.url,
            "tenant": ep.tenant,
            "event_types": list(ep.event_types),
            "filter": ep.payload_filter,
            "enabled": ep.enabled,
            "disabled_reason": ep.disabled_reason,
            "description": ep.description,
            "metadata": dict(ep.metadata or {}),
            "secret": _mask(ep),
            "signature": _signature(ep),
            "previous_secret_until": ep.previous_secret_until,
            "overrides": dict(ep.settings),
            "settings": effective,
            "authentication": _auth_kinds(ep),
            "breaker": breaker,
            "breaker_open_until": ep.breaker_open_until,
            "created_at": ep.created_at,
            "updated_at": ep.updated_at,
            "stats": stats,
        }
        if args.json:
            _print_json(data)
            return 0
        state = "enabled" if ep.enabled else f"disabled ({ep.disabled_reason or 'no reason'})"
        rows = [
            ("url", ep.url),
            ("state", state),
            ("tenant", ep.tenant or "-"),
            ("event types", ", ".join(ep.event_types)),
            ("payload filter", ep.payload_filter or "none"),
            ("description", ep.description or "-"),
            ("secret", f"{_mask(ep)} {data['signature']}"),
        ]
        if ep.previous_secret_until is not None and ep.previous_secret_until > now:
            rows.append(("previous secret", f"also signs until {_time(ep.previous_secret_until)}"))
        rows += [
            ("authentication", ", ".join(_auth_kinds(ep)) or "none"),
            ("breaker", breaker),
            ("created", _time(ep.created_at)),
            ("updated", _time(ep.updated_at)),
        ]
        print(f"endpoint {ep.id}")
        for name, value in rows:
            print(f"  {name:16} {value}")
        if ep.metadata:
            print("metadata")
            for key, value in sorted(ep.metadata.items()):
                print(f"  {key:16} {value}")
        print("settings (* = override of the configuration)")
        for key, value in effective.items():
            mark = "*" if key in ep.settings else " "
            shown = (
                (",".join(f"{v:g}" for v in value) or "none") if isinstance(value, list) else value
            )
            print(f" {mark}{key:19} {shown}")
        print("attempts         last hour  last day")
        for label, hour, day in zip(
            ("attempts", "2xx", "success rate", "p50 duration", "p99 duration"),
            _window_cells(stats.last_hour),
            _window_cells(stats.last_day),
            strict=True,
        ):
            print(f"  {label:14} {hour:>10}  {day:>8}")
        last = "-"
        if stats.last_attempt_at is not None:
            outcome = f"HTTP {stats.last_status}" if stats.last_status else stats.last_error
            last = f"{outcome} at {_time(stats.last_attempt_at)}"
        print(f"  {'last attempt':14} {last}")
        return 0

    return await _with_service(args, go)


def _window_cells(w: WindowStats) -> tuple[str, ...]:
    rate = "-" if w.success_rate is None else f"{w.success_rate:.1%}"
    return (str(w.attempts), str(w.succeeded), rate, _ms(w.p50_duration_s), _ms(w.p99_duration_s))


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f} ms"
