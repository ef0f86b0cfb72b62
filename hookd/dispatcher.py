"""Claim → fan-out → per-endpoint and per-origin slots → one attempt → buffered outcome writes.

The claim loop takes work only while this process holds fewer than `max_in_flight` deliveries,
and never for an endpoint whose local queue is full, whose origin's queue is full, or whose circuit
breaker is open (those deliveries stay in the database, unleased), so one slow or dead host cannot
fill the process with its own backlog and many hosts progress together. Each leased delivery
becomes one task owned by the dispatcher: it waits for its endpoint's adaptive limit, its origin's
limit and the process-wide limit, then makes one attempt and hands the outcome to the writer.

Retries due soon sit in a timer wheel that sizes the loop's sleep; the database's
`next_attempt_at` stays the truth, so a fired timer only triggers a claim.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter as Tally
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from hookd.classify import Classification
from hookd.config import Config
from hookd.hostpool import HostPools, Origin
from hookd.limits import AdaptiveLimit
from hookd.logs import RateLimitedLog
from hookd.metrics import Metrics
from hookd.models import AttemptRecord, Delivery, DeliveryState, Outcome
from hookd.outcome import decide
from hookd.runtime import EndpointRuntime, claim_rooms
from hookd.secretbox import SecretKeyError
from hookd.sender import attempt, build_body, webhook_id
from hookd.store import Store
from hookd.timerwheel import TimerWheel
from hookd.writer import OutcomeWriter

log = logging.getLogger("hookd.dispatcher")

ENDPOINT_REFRESH_S = 2.0
"""How often the endpoint cache is reloaded (enable/disable and URL changes take effect)."""

NEAR_DUE_BATCH = 10_000
"""Most retries loaded into the timer wheel per look at the database."""

DB_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError, SecretKeyError)
"""Failures of a database round trip (or of reading what it returned) that the loop survives."""


async def _no_awake_lock(awake: bool) -> bool:
    return False


@dataclass(slots=True)
class _Held:
    """A leased delivery held by this process."""

    delivery: Delivery
    leased_at: float
    sending: bool = False
    settled: bool = False
    started_unix_s: float = 0.0
    task: asyncio.Task[None] | None = None


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
        self._endpoints: dict[int, EndpointRuntime] = {}
        self._endpoints_loaded_at = -1e9
        self._origin_held: Tally[Origin] = Tally()
        self._requests = AdaptiveLimit(cfg.http.max_concurrent_requests)
        self._failure_log = RateLimitedLog(log, cfg.log.failed_attempts_per_s)
        self._tasks: dict[asyncio.Task[None], _Held] = {}
        self._held = 0
        self._wake = asyncio.Event()
        self.asleep = asyncio.Event()
        """Set while the claim loop sleeps with nothing to do and only a NOTIFY, a due retry or the
        polling fallback will wake it (tests wait for this)."""
        self._capacity = asyncio.Event()
        self._stopping = False
        self._sleeping: bool | None = None
        self._notified = False
        self._fanout_ratio = 1.0
        self._fan_out_after = 0
        self._wheel: TimerWheel[int] = TimerWheel(cfg.daemon.timer_tick_s, time.monotonic())
        self._wheel_loaded_at = -1e9
        self._recheck_at: float | None = None
        self._quiet_since: float | None = None
        """When claims last started coming back empty (None: the last claim found work)."""
        self._sleep_until = 0.0
        """While the claim loop sleeps: when it will wake by itself (monotonic seconds)."""
        self._background: set[asyncio.Task[None]] = set()
        self._m_claims_fan_out = metrics.claims.labels("fan_out")
        self._m_claims_due = metrics.claims.labels("due")
        # Labelled children looked up once: `.labels()` on every attempt shows in profiles.
        self._m_outcome = {
            o: metrics.deliveries.labels(o)
            for o in ("delivered", "retry_scheduled", "failed", "paused")
        }
        self._m_status: dict[str, Any] = {}
        self._m_host: dict[Origin, Any] = {}
        self.set_awake: Callable[[bool], Awaitable[bool]] = _no_awake_lock
        """Takes (True) or gives back (False) the lock that tells publishers a daemon is awake;
        the daemon wires it to its listener (see hookd/listener.py)."""

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

    @property
    def timers(self) -> int:
        """Retries waiting in the timer wheel."""
        return len(self._wheel)

    def open_breakers(self) -> int:
        """Endpoints whose breaker is open or half-open."""
        return sum(1 for rt in self._endpoints.values() if rt.breaker.state != "closed")

    def reconfigure(self, cfg: Config) -> None:
        """Apply a reloaded configuration: limits, retry policy, timeouts; reload endpoints soon.

        In-flight work keeps going; new limits apply as slots are taken and given back.
        """
        self._cfg = cfg
        self._requests.set_ceiling(cfg.http.max_concurrent_requests)
        self._pools.reconfigure(cfg.http)
        for rt in self._endpoints.values():
            rt.update(rt.endpoint, cfg)
        self._failure_log = RateLimitedLog(log, cfg.log.failed_attempts_per_s)
        self._endpoints_loaded_at = -1e9
        self._wake.set()

    # -- endpoints -----------------------------------------------------------------------------

    async def _refresh_endpoints(self) -> None:
        fresh = await self._store.endpoints()
        seen = set()
        for ep in fresh:
            seen.add(ep.id)
            rt = self._endpoints.get(ep.id)
            if rt is None:
                self._endpoints[ep.id] = EndpointRuntime.build(ep, self._cfg)
            elif rt.endpoint != ep:
                rt.update(ep, self._cfg)
        for gone in set(self._endpoints) - seen:
            if self._endpoints[gone].held == 0:
                del self._endpoints[gone]
        self._endpoints_loaded_at = time.monotonic()

    def _rooms(self) -> tuple[list[tuple[int, int]], list[int]]:
        """(endpoint, room) pairs this process may claim for now, and the endpoints held back."""
        http = self._cfg.http
        return claim_rooms(
            self._endpoints.items(),
            self._origin_held,
            2 * http.per_endpoint_limit,
            2 * http.per_host_limit,
            self._cfg.daemon.claim_batch,
            time.monotonic(),
        )

    # -- the claim loop ------------------------------------------------------------------------

    async def run(self) -> None:
        """Claim and dispatch until `drain()` is called. Database errors back off and retry."""
        backoff_s = 0.05
        while not self._stopping:
            try:
                if time.monotonic() - self._endpoints_loaded_at > ENDPOINT_REFRESH_S:
                    await self._refresh_endpoints()
                more = await self._claim_once()
                if self._quiet_since is None:
                    # Working, whatever woke us (a poll, a timer): hold the awake lock, so that
                    # publishers stop sending NOTIFYs. Free when it is already held.
                    await self._set_awake()
                backoff_s = 0.05
            except DB_ERRORS as exc:
                self._metrics.db_errors.inc()
                log.warning("claim failed (%s); retrying in %.2f s", exc, backoff_s)
                await self._wait(self._wake, backoff_s * (0.5 + random.random()))
                backoff_s = min(backoff_s * 2, 5.0)
                continue
            if self._stopping:
                break
            if not more:
                await self._idle()

    async def _claim_once(self) -> bool:
        """One round of claims; True if there is probably more to take right away.

        New events are fanned out only as far as some endpoint has room: when every endpoint's
        queue is full they wait in the outbox, the cheapest place to wait.
        """
        cfg = self._cfg.daemon
        free = cfg.max_in_flight - self._held
        if free <= 0:
            self._capacity.clear()
            await self._wait(self._capacity, cfg.poll_interval_s)
            return True
        rooms, blocked = self._rooms()
        room = sum(r for _, r in rooms)
        more = False
        if room or not self._endpoints:
            budget = min(free, room) if self._endpoints else free
            ev_limit = max(1, min(cfg.claim_batch, int(budget / self._fanout_ratio)))
            self._m_claims_fan_out.inc()
            fan = await self._store.fan_out(ev_limit, cfg.lease_s, blocked, self._fan_out_after)
            # While batches come back full, the next one starts past this one; once caught up,
            # scan from the start again, for events with lower ids that committed later.
            self._fan_out_after = fan.last_event_id if fan.events_claimed >= ev_limit else 0
            if fan.events_claimed:
                self._quiet_since = None
                self._metrics.events_claimed.inc(fan.events_claimed)
                self._fanout_ratio = max(1.0, fan.created / fan.events_claimed)
                await self._dispatch(fan.deliveries)
            more = fan.events_claimed >= ev_limit
            rooms, blocked = self._rooms()
        free = cfg.max_in_flight - self._held
        if free <= 0:
            return True
        due_limit = min(cfg.claim_batch, free)
        due: list[Delivery] = []
        if rooms:
            self._m_claims_due.inc()
            due = await self._store.claim_due(due_limit, cfg.lease_s, rooms)
        if due:
            self._quiet_since = None
        await self._dispatch(due)
        self._wheel.advance(time.monotonic())
        return more or len(due) >= due_limit

    async def _idle(self) -> None:
        """Sleep until a NOTIFY, a retry falls due, or the polling fallback fires.

        The flag that makes publishers NOTIFY is set only after `idle_linger_s` without work.
        Order matters: first tell publishers we sleep, then look once more, so an event committed
        before the flag was visible is not left waiting (DESIGN-NOTES item 1). A publisher that
        read the flag just before it changed may commit just after that look; one more look
        `idle_recheck_s` later picks such events up long before the polling fallback would.
        """
        cfg = self._cfg.daemon
        now = time.monotonic()
        if not self._sleeping:
            if self._quiet_since is None:
                self._quiet_since = now
            if now - self._quiet_since < cfg.idle_linger_s:
                # Keep looking for a moment before asking publishers for a NOTIFY: under steady
                # load the next events arrive within this window, so the flag (and the commit
                # lock every NOTIFY takes) stays off while the daemon is busy.
                await self._wait(self._wake, self._quiet_since + cfg.idle_linger_s - now)
                self._wake.clear()
                return
            self._wake.clear()
            await self.set_awake(False)
            self._sleeping = True
            rooms, _ = self._rooms()
            if await self._store.has_work(
                [ep for ep, _ in rooms], bool(rooms) or not self._endpoints
            ):
                await self._set_awake()
                return
            self._recheck_at = now + cfg.idle_recheck_s
        if now - self._wheel_loaded_at > cfg.retry_horizon_s / 2:
            await self._load_near_due()
        timeout = cfg.poll_interval_s
        next_due = self._wheel.next_due()
        if next_due is not None:
            timeout = min(timeout, next_due - now)
        if self._recheck_at is not None:
            timeout = min(timeout, self._recheck_at - now)
        for rt in self._endpoints.values():
            if rt.breaker.state == "open":
                # The probe may go out when the cool-down ends.
                timeout = min(timeout, rt.breaker.open_until - now)
        self._sleep_until = now + max(0.0, timeout)
        self._notified = False
        if self._recheck_at is None:
            self.asleep.set()
        await self._wait(self._wake, max(0.0, timeout))
        self._sleep_until = 0.0
        self.asleep.clear()
        self._wake.clear()
        now = time.monotonic()
        if self._recheck_at is not None and (self._notified or now >= self._recheck_at):
            self._recheck_at = None
        if self._notified:
            self._metrics.wakeups.labels("notify").inc()
            await self._set_awake()
        elif self._wheel.advance(now):
            self._metrics.wakeups.labels("timer").inc()
        else:
            self._metrics.wakeups.labels("poll").inc()

    async def _load_near_due(self) -> None:
        """Put retries due within the horizon (written by anyone, e.g. before a restart) in the wheel."""
        now = time.monotonic()
        margin = self._cfg.daemon.flush_interval_s
        for delivery_id, due_in_s in await self._store.near_due(
            self._cfg.daemon.retry_horizon_s, NEAR_DUE_BATCH
        ):
            self._wheel.add(delivery_id, now + due_in_s + margin)
        self._wheel_loaded_at = now

    async def _set_awake(self) -> None:
        # Cheap when the lock is already held; retried on every wake-up while it is not (a
        # publisher between its publish and its commit can hold it for a moment).
        self._sleeping = False
        await self.set_awake(True)

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
        # A claimed delivery is pending in the database, so its endpoint was enabled when it was
        # claimed: if the cache says otherwise (or does not know it), the cache is stale.
        if any(
            (rt := self._endpoints.get(d.endpoint_id)) is None or not rt.sendable
            for d in deliveries
        ):
            await self._refresh_endpoints()
        now = time.monotonic()
        cap = 2 * self._cfg.http.per_endpoint_limit
        bodies: dict[int, bytes] = {}
        for d in deliveries:
            rt = self._endpoints.get(d.endpoint_id)
            if rt is None:
                self._settle(d, DeliveryState.FAILED, "endpoint deleted")
                continue
            if not rt.sendable:
                if rt.problem is not None:
                    self._settle(d, DeliveryState.FAILED, f"cannot send: {rt.problem}")
                else:
                    self._settle(d, DeliveryState.PAUSED, "endpoint disabled")
                continue
            if rt.held >= cap:
                # One claim can bring more of a single endpoint than its queue should hold; the
                # rest go back to the database (due now, no attempt counted) instead of waiting
                # here on a lease.
                self._give_back(_Held(d, now))
                continue
            body = bodies.get(d.event_id)
            if body is None:
                body = bodies[d.event_id] = build_body(d.event_type, d.published_at, d.payload)
            held = _Held(d, now)
            rt.held += 1
            assert rt.origin is not None
            self._origin_held[rt.origin] += 1
            self._held += 1
            task = asyncio.create_task(self._deliver(held, rt, rt.origin, body))
            self._tasks[task] = held
            held.task = task
        self._metrics.in_flight.set(self._held)

    def _settle(self, d: Delivery, state: DeliveryState, reason: str) -> None:
        """Write a final state for a delivery that cannot be attempted (no attempt is logged)."""
        self._writer.add(Outcome(d.id, d.attempt, state, None, None, reason, counted=False), None)
        self._m_outcome["failed" if state is DeliveryState.FAILED else "paused"].inc()

    def _give_back(self, held: _Held) -> None:
        """Return a lease without an attempt: due again at once, the attempt counter unchanged.

        The claim loop looks again once the writer has had time to write it back.
        """
        d = held.delivery
        self._writer.add(
            Outcome(d.id, d.attempt, DeliveryState.PENDING, 0.0, None, None, counted=False), None
        )
        held.settled = True
        if not self._stopping:
            again = time.monotonic() + 2 * self._cfg.daemon.flush_interval_s
            if self._recheck_at is None or again < self._recheck_at:
                self._recheck_at = again
            self._wake.set()

    async def _deliver(self, held: _Held, rt: EndpointRuntime, origin: Origin, body: bytes) -> None:
        d = held.delivery
        try:
            async with rt.limit, self._pools.slots(origin), self._requests:
                now = time.monotonic()
                lease_left = held.leased_at + self._cfg.daemon.lease_s - now
                if (
                    self._stopping
                    or not rt.sendable
                    or lease_left < rt.total_timeout_s + 1.0
                    or not rt.breaker.allow(now)
                ):
                    # Not to be attempted now; what to do with it is decided below.
                    return
                held.sending = True
                held.started_unix_s = time.time()
                host_gauge = self._m_host.get(origin)
                if host_gauge is None:
                    host_gauge = self._m_host[origin] = self._metrics.requests_in_flight.labels(
                        self._metrics.host(origin.host)
                    )
                host_gauge.inc()
                try:
                    cls, rec = await attempt(
                        self._pools,
                        rt,
                        d,
                        webhook_id(self._install_id, d.event_id),
                        body,
                        max_retry_after_s=self._cfg.http.max_retry_after_s,
                        disable_on_gone=self._cfg.http.disable_on_gone,
                    )
                finally:
                    host_gauge.dec()
                self._record(d, rt, cls, rec)
                held.settled = True
        except Exception:
            # A bug must not strand the delivery until its lease expires: log it, give it back.
            log.exception("delivery %d: unexpected error", d.id)
            self._metrics.internal_errors.inc()
        finally:
            if not held.settled and held.sending:
                # Cancelled mid-request (shutdown past its grace period): the receiver may have
                # seen it, so it counts as an attempt, is logged, and is due again at once.
                self._record_cancelled(held)
            elif not held.settled:
                if rt.disabled or (not rt.endpoint.enabled and not self._stopping):
                    self._settle(d, DeliveryState.PAUSED, "endpoint disabled")
                else:
                    self._give_back(held)
            if held.task is not None:
                self._tasks.pop(held.task, None)
            if (
                rt.held == 2 * self._cfg.http.per_endpoint_limit
                or self._origin_held[origin] == 2 * self._cfg.http.per_host_limit
            ):
                self._wake.set()  # it leaves the held-back set: its backlog may be claimed
            rt.held -= 1
            self._origin_held[origin] -= 1
            self._held -= 1
            self._metrics.in_flight.set(self._held)
            self._capacity.set()

    def _record_cancelled(self, held: _Held) -> None:
        d = held.delivery
        reason = "attempt cancelled at shutdown"
        duration = max(0.0, time.time() - held.started_unix_s)
        rec = AttemptRecord(d.id, d.attempt, held.started_unix_s, duration, None, reason, None)
        self._writer.add(Outcome(d.id, d.attempt, DeliveryState.PENDING, 0.0, None, reason), rec)
        self._m_outcome["retry_scheduled"].inc()
        held.settled = True

    def _record(
        self, d: Delivery, rt: EndpointRuntime, cls: Classification, rec: AttemptRecord
    ) -> None:
        """Queue the attempt's outcome (hookd/outcome.py) and update the endpoint's limit,
        breaker and metrics; schedule the retry on the timer wheel."""
        m = self._metrics
        status = self._m_status.get(cls.status_class)
        if status is None:
            status = self._m_status[cls.status_class] = m.attempts.labels(cls.status_class)
        status.inc()
        m.attempt_duration.observe(rec.duration_s)
        now = time.monotonic()
        outcome = decide(d, cls, rec, rt.policy, time.time(), random.random())
        self._writer.add(outcome, rec)
        if outcome.state is DeliveryState.DELIVERED:
            self._m_outcome["delivered"].inc()
            m.lag.observe(max(0.0, time.time() - d.published_at.timestamp()))
            rt.limit.speed_up()
            if rt.breaker.state != "closed":
                self._breaker_changed(rt, None)
            rt.breaker.record(True, now)
            return
        self._failure_log.warning(
            "endpoint %d delivery %d attempt %d failed: %s",
            rt.endpoint.id,
            d.id,
            d.attempt,
            rec.error,
        )
        if cls.slow_down:
            rt.limit.slow_down()
        if rt.breaker.record(False, now):
            log.warning(
                "endpoint %d: circuit breaker open for %.0f s after repeated failures (%s)",
                rt.endpoint.id,
                rt.breaker.open_until - now,
                cls.reason,
            )
            self._breaker_changed(rt, rt.breaker.open_until - now)
        if outcome.state is DeliveryState.PAUSED:
            self._m_outcome["paused"].inc()
            self._disable(rt, "receiver answered 410 Gone")
        elif outcome.state is DeliveryState.FAILED:
            self._m_outcome["failed"].inc()
        else:
            self._m_outcome["retry_scheduled"].inc()
            delay = outcome.retry_in_s or 0.0
            if delay <= self._cfg.daemon.retry_horizon_s:
                due = now + delay + self._cfg.daemon.flush_interval_s
                self._wheel.add(d.id, due)
                if due < self._sleep_until:
                    self._wake.set()  # the loop sleeps past this retry: let it re-plan

    # -- side effects on endpoints, run as owned background tasks -----------------------------

    def _disable(self, rt: EndpointRuntime, reason: str) -> None:
        if rt.disabled:
            return
        rt.disabled = True
        log.warning("endpoint %d disabled: %s", rt.endpoint.id, reason)
        self._spawn(self._store.set_endpoint_enabled(rt.endpoint.id, False, reason))

    def _breaker_changed(self, rt: EndpointRuntime, open_for_s: float | None) -> None:
        until = None if open_for_s is None else datetime.now(UTC) + timedelta(seconds=open_for_s)
        self._spawn(self._store.set_breaker(rt.endpoint.id, until))

    def _spawn(self, coro: object) -> None:
        async def guarded() -> None:
            try:
                await coro  # type: ignore[misc]
            except DB_ERRORS as exc:
                self._metrics.db_errors.inc()
                log.warning("endpoint update failed (%s)", exc)

        task = asyncio.create_task(guarded())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- shutdown -------------------------------------------------------------------------------

    async def drain(self, grace_s: float) -> None:
        """Stop claiming; let sending attempts finish within `grace_s`; give back the rest.

        Queued deliveries (not yet sending) are given back at once; attempts still running after
        the grace period are cancelled and given back too (the receiver may have seen them:
        at-least-once). Outcomes go to the writer; the caller flushes it.
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
        # A task cancelled before its first step never runs its body: give those back here.
        for held in list(self._tasks.values()):
            if not held.settled:
                self._give_back(held)
        self._tasks.clear()
        if self._background:
            await asyncio.wait(set(self._background), timeout=5)
