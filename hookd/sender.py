"""One attempt: build the signed request, POST it through the host pools, classify the result."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import orjson

from hookd.auth import TokenError
from hookd.classify import Classification, FailureKind, Verdict, classify_failure, classify_response
from hookd.hostpool import HostPools, Origin, Response, SendFailed
from hookd.models import AttemptRecord, Delivery
from hookd.runtime import EndpointRuntime

TOKEN_RESPONSE_MAX_BYTES = 65536
"""Cap on an OAuth token endpoint's answer."""


def build_body(
    event_type: str,
    published_at: datetime,
    payload: str,
    position: int,
    ordering_key: str | None = None,
) -> bytes:
    """The request body: `{"type": ..., "timestamp": <RFC 3339 UTC>, "position": <event id>,
    ["ordering_key": ...,] "data": <payload>}` (README, "What a receiver gets").

    `payload` is the stored JSON text, spliced in without being parsed again. `position` is the
    event id: for one ordering key it grows in commit order when the key's writers serialise.
    """
    ts = published_at.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    key = b"" if ordering_key is None else b',"ordering_key":' + orjson.dumps(ordering_key)
    return b'{"type":%b,"timestamp":"%b","position":%d%b,"data":%b}' % (
        orjson.dumps(event_type),
        ts.encode(),
        position,
        key,
        payload.encode(),
    )


def webhook_id(install_id: str, event_id: int) -> str:
    """The `webhook-id` of an event: the same for every endpoint and every attempt."""
    return f"msg_{install_id}_{event_id}"


_CONFIG_TIMEOUTS = ("http.connect_timeout_s", "http.total_timeout_s")


def _timeout_settings(rt: EndpointRuntime) -> tuple[str, str]:
    """Where `rt`'s (connect, total) timeouts come from, for a timeout's message: the endpoint's
    own override (`hookd endpoint settings`) or the configuration key."""
    s = rt.endpoint.settings
    if "connect_timeout_s" not in s and "total_timeout_s" not in s:
        return _CONFIG_TIMEOUTS  # the common case, once per attempt: no strings built
    connect, total = (
        f"endpoint {rt.endpoint.id} setting {key}" if key in s else f"http.{key}"
        for key in ("connect_timeout_s", "total_timeout_s")
    )
    return connect, total


async def _token(pools: HostPools, rt: EndpointRuntime) -> str:
    """A valid OAuth access token for `rt` (cached, or fetched once for all waiters).

    Raises TokenError or SendFailed.
    """
    oauth = rt.oauth
    assert oauth is not None
    token = oauth.cached()
    if token is not None:
        return token
    async with oauth.lock:
        token = oauth.cached()
        if token is not None:
            return token
        url, form, headers = oauth.form()
        connect_setting, total_setting = _timeout_settings(rt)
        resp = await pools.post(
            Origin.of(url),
            url,
            form,
            headers,
            connect_timeout_s=rt.connect_timeout_s,
            total_timeout_s=rt.total_timeout_s,
            ssl_context=rt.ssl,
            max_body_bytes=TOKEN_RESPONSE_MAX_BYTES,
            connect_timeout_setting=connect_setting,
            total_timeout_setting=total_setting,
        )
        return oauth.accept(resp.status, resp.body)


async def _post_signed(
    pools: HostPools,
    rt: EndpointRuntime,
    msg_id: str,
    body: bytes,
    token: str | None,
    budget_s: float | None,
) -> Response:
    now = datetime.now(UTC)
    ts = int(now.timestamp())
    headers = {
        **rt.headers,
        "Content-Type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": rt.signer_at(now).sign(msg_id, ts, body),
    }
    if token is not None:
        headers["Authorization"] = "Bearer " + token
    assert rt.origin is not None
    connect_setting, total_setting = _timeout_settings(rt)
    return await pools.post(
        rt.origin,
        rt.endpoint.url,
        body,
        headers,
        connect_timeout_s=rt.connect_timeout_s,
        total_timeout_s=rt.total_timeout_s,
        ssl_context=rt.ssl,
        budget_s=budget_s,
        connect_timeout_setting=connect_setting,
        total_timeout_setting=total_setting,
    )


async def attempt(
    pools: HostPools,
    rt: EndpointRuntime,
    delivery: Delivery,
    msg_id: str,
    body: bytes,
    *,
    max_retry_after_s: float,
    disable_on_gone: bool,
    budget_s: float | None = None,
) -> tuple[Classification, AttemptRecord]:
    """Make one attempt; return its classification and its attempt-log row.

    Headers follow Standard Webhooks 1.0 (a fresh timestamp and signature over the exact body
    bytes). With OAuth, a 401 answer drops the cached token and the request is sent once more
    with a new one. Never raises for receiver or network failures: they are classified; a status
    in `rt.final_statuses` is FINAL, its error naming the setting it comes from.
    `budget_s` bounds the whole attempt, resends included, in seconds from now: the dispatcher
    sets it so the attempt ends inside the delivery's lease.
    """
    started = time.time()
    t0 = time.perf_counter()
    status: int | None = None
    error: str | None = None
    kept: str | None = None
    try:
        token = await _token(pools, rt) if rt.oauth is not None else None
        resp = await _post_signed(pools, rt, msg_id, body, token, budget_s)
        if resp.status == 401 and rt.oauth is not None and token is not None:
            rt.oauth.invalidate(token)
            token = await _token(pools, rt)
            resp = await _post_signed(pools, rt, msg_id, body, token, budget_s)
        status = resp.status
        kept = resp.body.decode("utf-8", "replace") if resp.body else None
        cls = classify_response(
            resp.status,
            resp.retry_after,
            now_unix_s=time.time(),
            max_retry_after_s=max_retry_after_s,
            disable_on_gone=disable_on_gone,
            final_statuses=rt.final_statuses,
        )
        if cls.verdict is Verdict.FINAL:
            error = f"{cls.reason} ({rt.final_statuses_setting})"
        elif cls.verdict is not Verdict.DELIVERED:
            error = cls.reason
    except SendFailed as exc:
        cls = classify_failure(exc.kind)
        detail = str(exc)
        error = detail if detail.startswith(cls.reason) else f"{cls.reason}: {detail}"
    except TokenError as exc:
        cls = classify_failure(FailureKind.OTHER)
        error = f"OAuth token request failed: {exc}"
    duration = time.perf_counter() - t0
    return cls, AttemptRecord(delivery.id, delivery.attempt, started, duration, status, error, kept)
