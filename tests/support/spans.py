"""A loopback receiver that records each request's span, and helpers for the engine tests.

`SpanReceiver` extends `support.receiver.Receiver`: every request gets a `Span` (webhook-id, path,
payload marker, whether its connection had carried a request before, arrival and end times,
status), and `late_drop` makes requests on a reused keep-alive connection wait and then drop
unanswered. `overlaps_and_resends` finds the two things a delivery must never show: two requests
for one webhook-id open at once, and a request after a 2xx.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson
from aiohttp import web

from hookd.signing import generate_secret
from hookd.store import Store

from support.daemon import wait_until
from support.receiver import Receiver

# -- a receiver that also records when each request ended, and on which connection ----------------


@dataclass(slots=True)
class Span:
    """One request as the receiver handled it: from arrival to the end of its handler.

    `status` is the status answered, None when the connection was dropped or the client gave up
    before the answer. `reused` tells whether an earlier request came on the same connection.
    Times are the test loop's `loop.time()`; `start_wall` is `time.time()` at arrival.
    """

    webhook_id: str | None
    path: str
    marker: Any
    reused: bool
    start: float
    start_wall: float
    end: float | None = None
    status: int | None = None

    def describe(self) -> str:
        end = f"{self.end:.3f}" if self.end is not None else "open"
        return (
            f"{self.path} {self.webhook_id} reused={self.reused} "
            f"[{self.start:.3f} .. {end}] -> {self.status}"
        )


class SpanReceiver(Receiver):
    """A `Receiver` that keeps a `Span` per request, and can drop reused connections late.

    `late_drop` maps a path to (seconds, behaviour): a request that arrives on a connection that
    already carried a request waits `seconds` and then has its connection aborted with no
    response; a request on a new connection is answered with the path's usual behaviour.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.spans: list[Span] = []
        self.late_drop: dict[str, float] = {}
        self._served: dict[object, int] = {}

    def spans_for(self, path: str) -> list[Span]:
        return [s for s in self.spans if s.path == path]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        loop = asyncio.get_running_loop()
        conn = request.protocol
        reused = self._served.get(conn, 0) > 0
        self._served[conn] = self._served.get(conn, 0) + 1
        body = await request.read()
        try:
            marker = (orjson.loads(body) or {}).get("data", {}).get("i")
        except (orjson.JSONDecodeError, AttributeError):
            marker = None
        span = Span(
            request.headers.get("webhook-id"),
            request.path,
            marker,
            reused,
            loop.time(),
            time.time(),
        )
        self.spans.append(span)
        try:
            drop_after = self.late_drop.get(request.path)
            if reused and drop_after is not None:
                # The scripted behaviour: hold the request, then drop it unanswered.
                await asyncio.sleep(drop_after)
                if request.transport is not None:
                    request.transport.abort()
                return web.Response(status=499)
            resp = await super()._handle(request)
            transport = request.transport
            if transport is not None and not transport.is_closing():
                span.status = resp.status
            return resp
        finally:
            span.end = loop.time()


def by_webhook_id(spans: list[Span]) -> dict[str | None, list[Span]]:
    groups: dict[str | None, list[Span]] = defaultdict(list)
    for s in sorted(spans, key=lambda s: s.start):
        groups[s.webhook_id].append(s)
    return groups


def overlaps_and_resends(spans: list[Span]) -> tuple[list[str], list[str]]:
    """(requests that overlapped another for the same webhook-id, requests sent after a 2xx)."""
    overlapping: list[str] = []
    after_2xx: list[str] = []
    for wid, group in by_webhook_id(spans).items():
        for i, s in enumerate(group[1:], start=1):
            if any(p.end is None or s.start < p.end for p in group[:i]):
                overlapping.append(f"{wid}: {[g.describe() for g in group]}")
                break
        for i, s in enumerate(group):
            if s.status is not None and 200 <= s.status < 300 and i + 1 < len(group):
                after_2xx.append(f"{wid}: {[g.describe() for g in group]}")
                break
    return overlapping, after_2xx


# -- shared helpers --------------------------------------------------------------------------------


async def publish_many(db: asyncpg.Connection, event_type: str, n: int, first: int = 1) -> None:
    """Publish `n` events of `event_type` in one transaction; payload {"i": first..first+n-1}."""
    await db.execute(
        "SELECT hookd.publish(event_type => $1, payload => jsonb_build_object('i', g))"
        " FROM generate_series($2::int, $3::int) AS g",
        event_type,
        first,
        first + n - 1,
    )


async def open_store(dsn: str) -> tuple[asyncpg.Pool, Store]:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    assert pool is not None
    return pool, Store(pool)


async def add_endpoint_with(
    store: Store, url: str, event_types: tuple[str, ...], settings: dict[str, Any]
) -> int:
    ep = await store.add_endpoint(url, generate_secret(), event_types, None, settings)
    return ep.id


async def states_by_marker(db: asyncpg.Connection, endpoint_id: int) -> dict[int, asyncpg.Record]:
    """The endpoint's deliveries keyed by the event's payload marker `i`."""
    rows = await db.fetch(
        "SELECT (e.payload->>'i')::int AS i, d.state, d.last_error, d.finished_at, d.attempts"
        " FROM hookd.deliveries d JOIN hookd.events e ON e.id = d.event_id"
        " WHERE d.endpoint_id = $1",
        endpoint_id,
    )
    return {r["i"]: r for r in rows}


async def try_wait_until(db: asyncpg.Connection, query: str, *args: Any, timeout_s: float) -> str:
    """`wait_until`, returning its failure message instead of raising ("" when it held)."""
    try:
        await wait_until(db, query, *args, timeout_s=timeout_s)
    except AssertionError as exc:
        return str(exc)
    return ""
