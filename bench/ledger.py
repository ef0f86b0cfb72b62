"""The ledger of one run: what was published, what reached the sink, when, and how often.

Inputs: the producers' `<key> <commit unix time>` files and the sink's request log lines
(`<unix time> <host> <uri> <webhook-id> <status>`, from nginx or the fault sink). An endpoint is
its URI path (`/hook/e<n>`); an event is the number after the last `_` of its webhook-id. A
delivery is the first 2xx request for an (endpoint, event) pair; every further 2xx for the same
pair is a duplicate; non-2xx requests are failed attempts. Latency is commit → the sink's receipt
of the first 2xx request (nginx logs at millisecond resolution).

published x endpoints = delivered + missing. A run with anything missing is void.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench.common import latency_summary_ms


def read_commits(paths: Iterable[Path]) -> dict[int, float]:
    """key → commit time, from producer output files."""
    out: dict[int, float] = {}
    for path in paths:
        with path.open() as f:
            for line in f:
                key, at = line.split()
                out[int(key)] = float(at)
    return out


@dataclass(slots=True)
class Request:
    """One request as the sink logged it."""

    at: float
    uri: str
    key: int | None
    status: int


def read_requests(paths: Iterable[Path | None]) -> list[Request]:
    """Requests from sink log files (lines that do not parse are skipped)."""
    out: list[Request] = []
    for path in paths:
        if path is None or not path.exists():
            continue
        with path.open() as f:
            for line in f:
                parts = line.split()
                if len(parts) != 5:
                    continue
                at, _host, uri, wid, status = parts
                try:
                    key = int(wid.rsplit("_", 1)[1]) if "_" in wid else None
                    out.append(Request(float(at), uri, key, int(status)))
                except ValueError:
                    continue
    return out


def endpoint_path(url: str) -> str:
    """The ledger's name of an endpoint: its URL's path."""
    return urlsplit(url).path


@dataclass(slots=True)
class EndpointFigures:
    """One endpoint's share of a run."""

    delivered: int = 0
    received_in_window: int = 0
    """Deliveries whose receipt falls in the window (throughput of the window)."""
    duplicates: int = 0
    failed_attempts: int = 0
    latencies: list[float] = field(default_factory=list)
    first_at: float | None = None
    last_at: float | None = None


def tally(
    commits: dict[int, float],
    requests: Sequence[Request],
    endpoints: Sequence[str],
    *,
    window: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """The ledger of `commits` (published events) against `requests`, for `endpoints` (paths).

    `window` (start, end in unix time) limits the latency figures to events committed in it
    (`window_delivered` counts them); the ledger itself always counts every published event.
    A tally over some of a run's endpoints counts the other endpoints' requests as stray.
    """
    wanted = set(endpoints)
    per: dict[str, EndpointFigures] = {e: EndpointFigures() for e in endpoints}
    seen: dict[tuple[str, int], int] = defaultdict(int)
    stray = 0
    for r in requests:
        if r.uri not in wanted or r.key is None or r.key not in commits:
            stray += 1
            continue
        fig = per[r.uri]
        if not 200 <= r.status < 300:
            fig.failed_attempts += 1
            continue
        n = seen[(r.uri, r.key)] = seen[(r.uri, r.key)] + 1
        if n > 1:
            fig.duplicates += 1
            continue
        fig.delivered += 1
        if window is not None and window[0] <= r.at <= window[1]:
            fig.received_in_window += 1
        committed = commits[r.key]
        if window is None or window[0] <= committed <= window[1]:
            fig.latencies.append(r.at - committed)
        fig.first_at = r.at if fig.first_at is None else min(fig.first_at, r.at)
        fig.last_at = r.at if fig.last_at is None else max(fig.last_at, r.at)
    published = len(commits)
    expected = published * len(endpoints)
    delivered = sum(f.delivered for f in per.values())
    all_lat = [x for f in per.values() for x in f.latencies]
    firsts = [f.first_at for f in per.values() if f.first_at is not None]
    lasts = [f.last_at for f in per.values() if f.last_at is not None]
    return {
        "published": published,
        "endpoints": len(endpoints),
        "expected": expected,
        "delivered": delivered,
        "missing": expected - delivered,
        "duplicates": sum(f.duplicates for f in per.values()),
        "failed_attempts": sum(f.failed_attempts for f in per.values()),
        "stray_requests": stray,
        "first_delivery_unix": min(firsts) if firsts else None,
        "last_delivery_unix": max(lasts) if lasts else None,
        "latency": latency_summary_ms(all_lat),
        "window_delivered": len(all_lat),
        "window_received": sum(f.received_in_window for f in per.values()),
        "per_endpoint": {
            e: {
                "delivered": f.delivered,
                "received_in_window": f.received_in_window,
                "duplicates": f.duplicates,
                "failed_attempts": f.failed_attempts,
                "latency": latency_summary_ms(f.latencies),
            }
            for e, f in per.items()
        },
    }
