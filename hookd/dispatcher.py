"""Claim → fan-out → hand to the per-origin pools → buffered outcome writes.

The claim loop takes work only while this process holds fewer than `max_in_flight` deliveries, and
never for an endpoint or origin whose local queue is already twice its concurrency limit (those
endpoints' new deliveries stay unleased in the database), so one slow host cannot fill the process
with its own backlog. Each leased delivery becomes one task owned by the dispatcher; the task waits
for its endpoint's and origin's slots, makes one attempt, and records the outcome in the writer.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter as Tally
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
import orjson

from hookd.classify import Classification, Verdict, classify_failure, classify_response
from hookd.config import Config
from hookd.hostpool import HostPools, Origin, SendFailed
from hookd.metrics import Metrics
from hookd.models import AttemptRecord, Delivery, DeliveryState, Endpoint, Outcome
from hookd.retry import RetryPolicy
from hookd.signing import InvalidSecret, Signer
from hookd.store import Store
from hookd.writer import OutcomeWriter

log = logging.getLogger("hookd.dispatcher")

ENDPOINT_REFRESH_S = 2.0
"""How often the endpoint cache is reloaded (enable/disable and URL changes take effect)."""

DB_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)


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


@dataclass(eq=False, slots=True)
class EndpointRuntime:
    """An endpoint plus what the dispatcher keeps for it while running."""

    endpoint: Endpoint
    origin: Origin | None
    signer: Signer | None
    policy: RetryPolicy
    slots: asyncio.Semaphore
    problem: str | None = None
    held: int = 0
    """Deliveries of this endpoint held by this process (queued or sending)."""


@dataclass(slots=True)
class _Held:
    delivery: Delivery
    leased_at: float
    sending: bool = False
    done: bool = False


class Dispatcher:
    """Runs the claim loop and owns every delivery task. Use `run()` in a TaskGroup, then `drain()`."""

    def __init__(
        self,
        cfg: Config,
        store: Store,
        pools: HostPools,
        writer: OutcomeWriter,
        metrics: Metrics,
        install_id: str,
    ) -> None:
        self._cfg = cfg
        self._store = store
        self._pools = pools
        self._writer = writer
        self._metrics = metrics
        self._install_id = install_id
        self._policy = cfg.retry.policy()
        self._endpoints: dict[int, EndpointRuntime] = {}
        self._endpoints_loaded_at = -1e9
        self._origin_held: Tally[Origin] = Tally()
        self._tasks: dict[asyncio.Task[None], _Held] = {}
        self._held = 0
        self._wake = asyncio.Event()
        self.asleep = asyncio.Event()
        """Set while the claim loop waits for a wake-up with nothing to do (tests and health)."""
        self._capacity = asyncio.Event()
        self._stopping = False
        self._sleeping: bool | None = None
        self._fanout_ratio = 1.0
        self._notified = False
        self._next_retry_at: float | None = None
        self._to_release: list[int] = []

    # -- signals from outside ----------------------------------------------------------------

    def wake(self) -> None:
        """A NOTIFY arrived: new events were committed."""
        self._notified = True
        self._wake.set()

    def rescan(self) -> None:
        """Look for work at once (after a listener reconnect)."""
        self._wake.set()

    @property
    def held(self) -> int:
        """Deliveries held by this process now."""
        return self._held

    # -- endpoints -----------------------------------------------------------------------------

    async def _refresh_endpoints(self) -> None:
        fresh = await self._store.endpoints()
        limit = self._cfg.http.per_endpoint_limit
        seen = set()
        for ep in fresh:
            seen.add(ep.id)
            rt = self._endpoints.get(ep.id)
            if rt is not None and rt.endpoint == ep:
                continue
            origin, signer, problem = None, None, None
            try:
                origin = Origin.of(ep.url)
                signer = Signer(ep.secret)
            except (ValueError, InvalidSecret) as exc:
                problem = str(exc)
            if rt is None:
                self._endpoints[ep.id] = EndpointRuntime(
                    ep, origin, signer, self._policy, asyncio.Semaphore(limit), problem
                )
            else:
                rt.endpoint, rt.origin, rt.signer, rt.problem = ep, origin, signer, problem
        for gone in set(self._endpoints) - seen:
            if self._endpoints[gone].held == 0:
                del self._endpoints[gone]
        self._endpoints_loaded_at = time.monotonic()

    def _saturated(self) -> list[int]:
        """Endpoints whose local queue is full: claims leave their deliveries in the database."""
        per_ep = 2 * self._cfg.http.per_endpoint_limit
        per_host = 2 * self._cfg.http.per_host_limit
        return [
            ep_id
            for ep_id, rt in self._endpoints.items()
            if rt.held >= per_ep
            or (rt.origin is not None and self._origin_held[rt.origin] >= per_host)
        ]

    # -- the claim loop ------------------------------------------------------------------------

    async def run(self) -> None:
        """Claim and dispatch until `drain()` is called. Database errors back off and retry."""
        backoff_s = 0.05
        while not self._stopping:
            try:
                if time.monotonic() - self._endpoints_loaded_at > ENDPOINT_REFRESH_S:
                    await self._refresh_endpoints()
                more = await self._claim_once()
                backoff_s = 0.05
            except DB_ERRORS as exc:
                self._metrics.db_errors.inc()
                log.warning("claim failed (%s); retrying in %.2f s", exc, backoff_s)
                await self._wait(self._wake, backoff_s)
                backoff_s = min(backoff_s * 2, 5.0)
                continue
            if self._stopping:
                break
            if more:
                continue
            await self._idle()

    async def _claim_once(self) -> bool:
        """One round of claims; True if there is probably more to take right away."""
        cfg = self._cfg.daemon
        free = cfg.max_in_flight - self._held
        if free <= 0:
            self._capacity.clear()
            await self._wait(self._capacity, cfg.poll_interval_s)
            return True
        saturated = self._saturated()
        ev_limit = max(1, min(cfg.claim_batch, int(free / max(self._fanout_ratio, 1.0))))
        fan = await self._store.fan_out(ev_limit, cfg.lease_s, saturated)
        if fan.events_claimed:
            self._metrics.events_claimed.inc(fan.events_claimed)
            self._fanout_ratio = max(1.0, fan.created / fan.events_claimed)
            await self._dispatch(fan.deliveries)
        if fan.events_claimed >= ev_limit:
            return True
        free = cfg.max_in_flight - self._held
        if free <= 0:
            return True
        due_limit = min(cfg.claim_batch, free)
        due = await self._store.claim_due(due_limit, cfg.lease_s, self._saturated())
        await self._dispatch(due)
        return len(due) >= due_limit

    async def _idle(self) -> None:
        """Sleep until a NOTIFY, a retry falls due, or the polling fallback fires.

        Order matters: first tell publishers we sleep, then look once more, so an event committed
        before the flag was visible is not left waiting for the poll (DESIGN-NOTES item 1).
        """
        cfg = self._cfg.daemon
        if not self._sleeping:
            self._wake.clear()
            await self._store.set_sleeping(True)
            self._sleeping = True
            if await self._store.has_work():
                await self._set_awake()
                return
        timeout = cfg.poll_interval_s
        if self._next_retry_at is not None:
            timeout = max(0.0, min(timeout, self._next_retry_at - time.monotonic()))
        self._notified = False
        self.asleep.set()
        await self._wait(self._wake, timeout)
        self.asleep.clear()
        self._wake.clear()
        if self._notified:
            self._metrics.wakeups.labels("notify").inc()
            await self._set_awake()
        else:
            self._metrics.wakeups.labels("poll").inc()
        if self._next_retry_at is not None and self._next_retry_at <= time.monotonic():
            self._next_retry_at = None

    async def _set_awake(self) -> None:
        if self._sleeping is not False:
            await self._store.set_sleeping(False)
            self._sleeping = False

    @staticmethod
    async def _wait(event: asyncio.Event, timeout_s: float) -> None:
        try:
            async with asyncio.timeout(timeout_s):
                await event.wait()
        except TimeoutError:
            pass

    # -- delivery tasks -----------------------------------------------------------------------

    async def _dispatch(self, deliveries: list[Delivery]) -> None:
        if not deliveries:
            return
        if any(d.endpoint_id not in self._endpoints for d in deliveries):
            await self._refresh_endpoints()
        now = time.monotonic()
        bodies: dict[int, bytes] = {}
        for d in deliveries:
            rt = self._endpoints.get(d.endpoint_id)
            if rt is None:
                self._settle(d, DeliveryState.FAILED, "endpoint deleted")
                continue
            if not rt.endpoint.enabled:
                self._settle(d, DeliveryState.PAUSED, "endpoint disabled")
                continue
            if rt.problem is not None or rt.origin is None or rt.signer is None:
                self._settle(d, DeliveryState.FAILED, f"cannot send: {rt.problem}")
                continue
            body = bodies.get(d.event_id)
            if body is None:
                body = bodies[d.event_id] = build_body(d.event_type, d.published_at, d.payload)
            held = _Held(d, now)
            rt.held += 1
            self._origin_held[rt.origin] += 1
            self._held += 1
            task = asyncio.create_task(self._deliver(held, rt, rt.origin, rt.signer, body))
            self._tasks[task] = held
        self._metrics.in_flight.set(self._held)

    def _settle(self, d: Delivery, state: DeliveryState, reason: str) -> None:
        """Write a final state for a delivery that cannot be attempted (no attempt is logged)."""
        self._writer.add(Outcome(d.id, d.attempt, state, None, None, reason), None)
        self._metrics.deliveries.labels(
            "failed" if state is DeliveryState.FAILED else "paused"
        ).inc()

    async def _deliver(
        self, held: _Held, rt: EndpointRuntime, origin: Origin, signer: Signer, body: bytes
    ) -> None:
        d = held.delivery
        try:
            async with rt.slots, self._pools.slots(origin):
                lease_left = held.leased_at + self._cfg.daemon.lease_s - time.monotonic()
                if self._stopping or lease_left < self._cfg.http.total_timeout_s + 1.0:
                    # Not enough lease left to finish an attempt: give it back untouched.
                    return
                held.sending = True
                self._attempt_and_record(d, rt, *(await self._attempt(d, rt, origin, signer, body)))
                held.done = True
        finally:
            task = asyncio.current_task()
            self._tasks.pop(task, None)  # type: ignore[arg-type]
            if not held.done:
                self._to_release.append(d.id)
            rt.held -= 1
            self._origin_held[origin] -= 1
            self._held -= 1
            self._metrics.in_flight.set(self._held)
            self._capacity.set()

    async def _attempt(
        self, d: Delivery, rt: EndpointRuntime, origin: Origin, signer: Signer, body: bytes
    ) -> tuple[Classification, AttemptRecord]:
        webhook_id = f"msg_{self._install_id}_{d.event_id}"
        started = time.time()
        ts = int(started)
        headers = {
            "Content-Type": "application/json",
            "webhook-id": webhook_id,
            "webhook-timestamp": str(ts),
            "webhook-signature": signer.sign(webhook_id, ts, body),
        }
        t0 = time.perf_counter()
        status: int | None = None
        error: str | None = None
        kept: str | None = None
        try:
            resp = await self._pools.post(origin, rt.endpoint.url, body, headers)
            status = resp.status
            kept = resp.body.decode("utf-8", "replace") if resp.body else None
            cls = classify_response(
                resp.status,
                resp.retry_after,
                now_unix_s=time.time(),
                max_retry_after_s=self._policy.schedule_s[-1],
            )
            if cls.verdict is not Verdict.DELIVERED:
                error = cls.reason
        except SendFailed as exc:
            cls = classify_failure(exc.kind)
            error = f"{cls.reason}: {exc}" if str(exc) else cls.reason
        duration = time.perf_counter() - t0
        self._metrics.attempts.labels(cls.status_class).inc()
        self._metrics.attempt_duration.observe(duration)
        return cls, AttemptRecord(d.id, d.attempt, started, duration, status, error, kept)

    def _attempt_and_record(
        self, d: Delivery, rt: EndpointRuntime, cls: Classification, rec: AttemptRecord
    ) -> None:
        """Turn a classified attempt into an outcome and queue it for write-back."""
        if cls.verdict is Verdict.DELIVERED:
            outcome = Outcome(d.id, d.attempt, DeliveryState.DELIVERED, None, rec.status, None)
            self._metrics.deliveries.labels("delivered").inc()
            self._metrics.lag.observe(max(0.0, time.time() - d.published_at.timestamp()))
        else:
            age_s = max(0.0, time.time() - d.created_at.timestamp())
            delay = rt.policy.next_delay_s(d.attempt, age_s, random.random())
            if delay is not None and cls.retry_after_s is not None:
                delay = max(delay, cls.retry_after_s)
            if delay is None:
                outcome = Outcome(
                    d.id, d.attempt, DeliveryState.FAILED, None, rec.status, rec.error
                )
                self._metrics.deliveries.labels("failed").inc()
            else:
                outcome = Outcome(
                    d.id, d.attempt, DeliveryState.PENDING, delay, rec.status, rec.error
                )
                self._metrics.deliveries.labels("retry_scheduled").inc()
                due = time.monotonic() + delay
                if self._next_retry_at is None or due < self._next_retry_at:
                    self._next_retry_at = due
        self._writer.add(outcome, rec)

    # -- shutdown -------------------------------------------------------------------------------

    async def drain(self, grace_s: float) -> None:
        """Stop claiming; let sending attempts finish within `grace_s`; give back the rest.

        Queued deliveries (not yet sending) are released at once; attempts still running after the
        grace period are cancelled and released too (the receiver may have seen them: at-least-once).
        """
        self._stopping = True
        self._wake.set()
        self._capacity.set()
        for task, held in list(self._tasks.items()):
            if not held.sending:
                task.cancel()
        pending = set(self._tasks)
        if pending:
            _, still = await asyncio.wait(pending, timeout=grace_s)
            for task in still:
                task.cancel()
            if still:
                await asyncio.wait(still)
        release, self._to_release = self._to_release, []
        if release:
            await self._store.release(release)
