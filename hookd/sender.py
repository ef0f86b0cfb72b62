"""One attempt: build the signed request, POST it through the host pools, classify the result."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import orjson

from hookd.classify import Classification, Verdict, classify_failure, classify_response
from hookd.hostpool import HostPools, Origin, SendFailed
from hookd.models import AttemptRecord, Delivery
from hookd.signing import Signer


def build_body(event_type: str, published_at: datetime, payload: str) -> bytes:
    """The request body: `{"type": ..., "timestamp": <RFC 3339 UTC>, "data": <payload>}`.

    `payload` is the stored JSON text, spliced in without being parsed again.
    """
    ts = published_at.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    return b'{"type":%b,"timestamp":"%b","data":%b}' % (
        orjson.dumps(event_type),
        ts.encode(),
        payload.encode(),
    )


def webhook_id(install_id: str, event_id: int) -> str:
    """The `webhook-id` of an event: the same for every endpoint and every attempt."""
    return f"msg_{install_id}_{event_id}"


async def attempt(
    pools: HostPools,
    origin: Origin,
    url: str,
    signer: Signer,
    delivery: Delivery,
    msg_id: str,
    body: bytes,
    *,
    connect_timeout_s: float,
    total_timeout_s: float,
    max_retry_after_s: float,
    disable_on_gone: bool,
) -> tuple[Classification, AttemptRecord]:
    """Make one attempt; return its classification and its attempt-log row. Never raises for
    receiver or network failures: they are classified (Standard Webhooks 1.0 headers, signed over
    the exact body bytes with a fresh timestamp)."""
    started = time.time()
    ts = int(started)
    headers = {
        "Content-Type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": signer.sign(msg_id, ts, body),
    }
    t0 = time.perf_counter()
    status: int | None = None
    error: str | None = None
    kept: str | None = None
    try:
        resp = await pools.post(
            origin,
            url,
            body,
            headers,
            connect_timeout_s=connect_timeout_s,
            total_timeout_s=total_timeout_s,
        )
        status = resp.status
        kept = resp.body.decode("utf-8", "replace") if resp.body else None
        cls = classify_response(
            resp.status,
            resp.retry_after,
            now_unix_s=time.time(),
            max_retry_after_s=max_retry_after_s,
            disable_on_gone=disable_on_gone,
        )
        if cls.verdict is not Verdict.DELIVERED:
            error = cls.reason
    except SendFailed as exc:
        cls = classify_failure(exc.kind)
        detail = str(exc)
        error = detail if detail.startswith(cls.reason) else f"{cls.reason}: {detail}"
    duration = time.perf_counter() - t0
    return cls, AttemptRecord(delivery.id, delivery.attempt, started, duration, status, error, kept)
