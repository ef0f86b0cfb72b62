"""The claim loop: fan out new events, lease due deliveries, hand them to the in-flight ledger.

Each round is one fan-out claim and one due claim, both short transactions. Fan-out takes up to
`claim_batch` events whatever room endpoints have (the outbox is never blocked): deliveries for
endpoints with room are leased at once, the rest wait unleased in the database, where a full, slow,
broken or paused endpoint's backlog costs nothing. Due claims take first attempts ahead of
retries. How much of each endpoint may be claimed is `claim_rooms` (hookd/claims.py) over the
ledger's caps (hookd/inflight.py).

Between rounds the wake-up planner (hookd/wakeups.py) decides how long to wait. Database errors
(`StoreUnavailable`) anywhere in a round back off and retry, and claims stay off while the writer
cannot write outcomes, so an outage of any length ends no process and overfills no buffer.

Retries due soon sit in a timer wheel that sizes the loop's sleep; the database's
`next_attempt_at` stays the truth, so a fired timer only triggers a claim.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from collections.abc import Coroutine
from typing import Any

from hookd.claims import ClaimWindow
from hookd.config import Config
from hookd.errors import StoreUnavailable
from hookd.hostpool import HostPools
from hookd.inflight import Held, InFlight
from hookd.metrics import Metrics
from hookd.models import Delivery, DeliveryState
from hookd.recorder import Recorder
from hookd.runtime import LEASE_MARGIN_S, EndpointRuntime
from hookd.secretbox import SecretKeyError
from hookd.sender import attempt, build_body, webhook_id
from hookd.store import Store
from hookd.timerwheel import TimerWheel
from hookd.wakeups import WakePlanner
from hookd.writer import OutcomeWriter

log = logging.getLogger("hookd.dispatcher")

ENDPOINT_REFRESH_S = 2.0
"""How often the endpoint cache is reloaded (enable/disable and URL changes take effect)."""

NEAR_DUE_BATCH = 10_000
"""Most retries loaded into the timer wheel per look at the database."""

CURSOR_TRAIL_IDS = 1_000
"""Once caught up, fan-out scans start this many ids below the highest id seen (see _claim)."""

QUEUE_SLACK_S = 1.0
"""A held delivery whose lease leaves less than its total timeout minus this for the attempt is
given back unattempted; one that starts within it gets a budget that much shorter at most."""

BACKOFF_MAX_S = 5.0
"""Longest pause between tries while the database is unavailable."""


def refill_at(max_in_flight: int) -> int:
    """Free slots a full process waits for before it claims again: an eighth (at least 1)."""
    return max(1, max_in_flight // 8)


class Dispatcher:
    """Runs the claim loop and owns the engine rooms. Use `run()` in a TaskGroup, then `drain()`.

    `asleep` is the planner's: set while the loop sleeps waiting for a NOTIFY, a timer or the poll.
    """

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
        self._wheel: TimerWheel[int] = TimerWheel(cfg.daemon.timer_tick_s, time.monotonic())
        self._wheel_loaded_at = -1e9
        self._stopping = False
        self._stopped = asyncio.Event()
        self._fan_out_after = 0
        self._max_event_id = 0
        self._full_scan_at = 0.0
        self._draining = False
        self._due_wanted = True
        """Whether a due claim may find something now: set by what makes deliveries due (a
        fan-out that left some unleased, a give-back, a fired timer, room freed, a reconnect)."""
        self._due_check_at = 0.0
        """When a due claim runs anyway (every poll interval: other daemons' expired leases,
        enables, retries beyond the timer horizon)."""
        self._background: set[asyncio.Task[None]] = set()
        self._window = ClaimWindow()
        """Which endpoints claims look at and how much of each they take (hookd/claims.py)."""
        self._refilling = False
        self._empty_looked = 0
        """Endpoints looked at by due claims in a row that found nothing."""
        """Set when the process held max_in_flight; cleared once refill_at() slots are free."""
        self.planner = WakePlanner(cfg.daemon)
        self.asleep = self.planner.asleep
        self.ledger = InFlight(
            cfg, self._attempt, self._give_back, self._room_freed, metrics.in_flight
        )
        # Claims see only committed state: the next delivery of a key is due once the write
        # that ended the previous one is done, not when the recorder hands it over.
        writer.on_released = self._key_released
        self.recorder = Recorder(
            cfg, store, writer, metrics, self._wheel, self._spawn, self._retry_planned
        )
        self.db_ok = True
        """False while the last round failed with StoreUnavailable (for /readyz)."""
        self._m_claims_fan_out = metrics.claims.labels("fan_out")
        self._m_claims_due = metrics.claims.labels("due")
        self._m_host: dict[Any, Any] = {}

    # -- signals from outside ----------------------------------------------------------------

    def wake(self) -> None:
        """A NOTIFY arrived: new events were committed."""
        self.planner.notify()

    def rescan(self) -> None:
        """Look for work at once, from the start of the outbox (after a listener reconnect)."""
        self._fan_out_after = 0
        self._due_wanted = True
        self.planner.wake()

    def want_due(self) -> None:
        """Deliveries were made due now by someone else (a retry, resend, replay or test event
        from the operating service): claim due deliveries at once, not at the next poll."""
        self._due_wanted = True
        self.planner.wake()

    def _room_freed(self) -> None:
        """An endpoint or origin that was held back at its cap has room again."""
        self._due_wanted = True
        self.planner.wake()

    def _key_released(self) -> None:
        """A delivery with an ordering key ended (written): the next one of its key is due."""
        self._due_wanted = True
        self.planner.wake()

    @property
    def held(self) -> int:
        """Deliveries held by this process now."""
        return self.ledger.held

    @property
    def timers(self) -> int:
        """Retries waiting in the timer wheel."""
        return len(self._wheel)

    def open_breakers(self) -> int:
        """Endpoints whose breaker is open or half-open."""
        return sum(1 for rt in self._endpoints.values() if rt.breaker.state != "closed")

    def reconfigure(self, cfg: Config) -> None:
        """Apply a reloaded configuration: limits, retry policy, timeouts, the SSRF guard ([security]
        allow_cidrs, allow_hosts, ssrf_guard); reload endpoints soon.

        In-flight work keeps going; new limits apply as slots are taken and given back.
        """
        self._cfg = cfg
        self._pools.reconfigure(cfg.http, cfg.security.policy())
        for rt in self._endpoints.values():
            rt.update(rt.endpoint, cfg)
        self.ledger.reconfigure(cfg)
        self.recorder.reconfigure(cfg)
        self.planner.reconfigure(cfg.daemon)
        self._endpoints_loaded_at = -1e9

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
                self._metrics.forget_endpoint(gone)
            else:
                self._endpoints[gone].deleted = True
        self._endpoints_loaded_at = time.monotonic()

    # -- the claim loop ------------------------------------------------------------------------

    async def run(self) -> None:
        """Claim and dispatch until `drain()` is called; never raises for a database outage."""
        backoff_s = 0.05
        while not self._stopping:
            try:
                if await self._round():
                    backoff_s = 0.05
            except (StoreUnavailable, SecretKeyError) as exc:
                self._metrics.db_errors.inc()
                if self.db_ok:
                    # StoreUnavailable already reads "database unavailable (cause)".
                    what = (
                        str(exc)
                        if isinstance(exc, StoreUnavailable)
                        else f"cannot read stored endpoint secrets (security.secret_key_file): {exc}"
                    )
                    log.warning("%s; retrying with backoff", what)
                self.db_ok = False
                await self._pause(backoff_s * (0.5 + random.random()))
                backoff_s = min(backoff_s * 2, BACKOFF_MAX_S)

    async def _round(self) -> bool:
        """One look for work: claim what there is, or wait for the planner's next reason to look.

        Returns True if it reached the database (so the database is known to answer)."""
        cfg = self._cfg.daemon
        if self._writer.failing:
            # Outcomes are not being written: claim nothing until they are, so the buffer stays
            # bounded and no delivery of ours is claimed again while its outcome waits.
            await self._writer.wait_healthy(cfg.poll_interval_s)
            return False
        if self.ledger.held >= cfg.max_in_flight:
            self._refilling = True
        elif self.ledger.held <= cfg.max_in_flight - refill_at(cfg.max_in_flight):
            self._refilling = False
        if self._refilling:
            # Full: wait until an eighth of the slots is free again. Claiming each slot as it
            # frees would cost two statements per delivery (a backlog of thousands of endpoints
            # with one delivery each drained at a few hundred per second); the eighth still
            # queued keeps every sender busy meanwhile.
            self.ledger.room.clear()
            await self._wait_event(self.ledger.room, cfg.poll_interval_s)
            return False
        now = time.monotonic()
        if now - self._endpoints_loaded_at > ENDPOINT_REFRESH_S:
            await self._refresh_endpoints()
        found, more = await self._claim()
        if not self.db_ok:
            log.info("database reachable again; claiming resumes")
            self.db_ok = True
        if found:
            await self.planner.working()
        if more or self._stopping:
            return True
        if now - self._wheel_loaded_at > cfg.retry_horizon_s / 2:
            await self._load_near_due()
        await self.planner.idle(self._probe, self._next_wake_at)
        if self.planner.last_reason == "timer":
            self._due_wanted = True  # a retry or a breaker's cool-down fell due
        self._metrics.wakeups.labels(self.planner.last_reason).inc()
        if self._wheel.advance(time.monotonic()):
            self._due_wanted = True
        return True

    async def _claim(self) -> tuple[bool, bool]:
        """One fan-out and one due claim: (found anything, probably more to take right away)."""
        cfg = self._cfg.daemon
        now = time.monotonic()
        if now >= self._full_scan_at:
            # A transaction that committed late has a lower id than events already fanned out:
            # scan from the start at least every poll interval, even while a backlog drains.
            self._fan_out_after = 0
            self._full_scan_at = now + cfg.poll_interval_s
        rooms, _ = self._window.rooms(
            self._endpoints, self.ledger, self._cfg.daemon, for_fan_out=True
        )
        self._m_claims_fan_out.inc()
        lease_from = time.monotonic()
        batch = cfg.claim_batch
        # While a backlog drains (the last batch was full), the fresh lane takes the newest
        # events too, so that events published now are not queued behind a storm's.
        newest = max(1, cfg.claim_batch // 4) if self._draining else 0
        fan = await self._store.fan_out(
            batch,
            cfg.lease_s,
            rooms,
            self._fan_out_after,
            newest,
            cfg.fan_out_max_deliveries,
        )
        # A claim cut at its bound of deliveries (an event for thousands of endpoints) is full
        # too: the rest of that event is the next claim's, at once.
        full = fan.oldest_claimed >= batch or fan.cut_event_id is not None
        self._draining = full
        # Where the next scan starts. Fanned-out events leave dead entries at the front of the
        # outbox index until vacuum, and every scan from the start walks them (each one a heap
        # visit while an older transaction holds the horizon back): so while batches come back
        # full, the next one starts past this one; once caught up, a little before the highest
        # id seen, which still finds events that committed slightly out of id order. Anything
        # older is found by the full scan every poll interval (above).
        self._max_event_id = max(self._max_event_id, fan.last_event_id)
        self._fan_out_after = (
            fan.last_event_id if full else max(0, self._max_event_id - CURSOR_TRAIL_IDS)
        )
        if fan.events_claimed or fan.created:
            self._metrics.events_claimed.inc(fan.events_claimed)
            if fan.unleased_endpoints:
                self._due_wanted = True  # some were left unleased for endpoints without room
                for ep in fan.unleased_endpoints:
                    if (rt := self._endpoints.get(ep)) is not None:
                        rt.backlog = True
            await self._dispatch(fan.deliveries, lease_from)
        if self._wheel.advance(time.monotonic()):
            self._due_wanted = True
        rooms, _ = self._window.rooms(self._endpoints, self.ledger, self._cfg.daemon)
        free = cfg.max_in_flight - self.ledger.held
        due: list[Delivery] = []
        window_more = False
        limit = min(cfg.claim_batch, free)
        now = time.monotonic()
        if not rooms or limit <= 0:
            # Nothing could be claimed now; what changes that (room freed, a breaker's cool-down
            # ending, a retry falling due) sets _due_wanted again.
            self._due_wanted = False
        elif self._due_wanted or now >= self._due_check_at:
            # Only when something may be due: under steady load most rounds are one fan-out.
            self._due_wanted = False
            self._due_check_at = now + cfg.poll_interval_s
            self._m_claims_due.inc()
            claim = await self._store.claim_due(
                limit, cfg.lease_s, rooms, unfanned_park_s=cfg.poll_interval_s
            )
            due = claim.deliveries
            if len(due) >= limit or claim.parked:
                # Parked deliveries (behind an earlier one of their ordering key) took room.
                self._due_wanted = True
            elif self._window.partial and (
                due or self._window.had_backlog or self._empty_looked < len(self._endpoints)
            ):
                # Only a window of the endpoints was asked: the next window may have more, until
                # a whole round of windows came back empty.
                self._due_wanted = True
                window_more = True
            self._empty_looked = 0 if due else self._empty_looked + self._window.looked
            got = Counter(d.endpoint_id for d in due)
            cut_short = len(due) >= limit
            for ep, room in rooms:
                if (rt := self._endpoints.get(ep)) is not None:
                    # A full room means more may be waiting; less means it was all there was,
                    # unless the claim's limit cut it short (then nothing is known).
                    rt.backlog = cut_short or got[ep] + claim.parked.get(ep, 0) >= room
            if not self._window.partial:
                # Endpoints take turns in the order of `rooms` (claim_due): the next claim starts
                # after those served, or with more endpoints than the limit the same ones would
                # win every tie.
                self._window.start += len(got)
            await self._dispatch(due, now)
        found = bool(fan.events_claimed or fan.created or due)
        return found, full or window_more or (limit > 0 and len(due) >= limit)

    async def _probe(self) -> bool:
        """Cheap look for work while lingering or after giving the awake lock back: something
        made deliveries due here, or events wait in the outbox (one index probe)."""
        # Never from the very start (a dead prefix of the index makes that probe cost tens of ms
        # after a burst): older late committers are the periodic full scan's.
        after = max(self._fan_out_after, self._max_event_id - CURSOR_TRAIL_IDS)
        return self._due_wanted or await self._store.outbox_waiting(after)

    def _next_wake_at(self) -> float | None:
        """Monotonic time of the next timer: a due retry or the end of a breaker's cool-down."""
        due = self._wheel.next_due()
        for rt in self._endpoints.values():
            if rt.breaker.state == "open" and (due is None or rt.breaker.open_until < due):
                due = rt.breaker.open_until
        return due

    def _retry_planned(self, due: float) -> None:
        if self.planner.asleep.is_set():
            self.planner.wake()  # the loop may sleep past this retry: let it re-plan

    async def _load_near_due(self) -> None:
        """Put retries due within the horizon (written by anyone, e.g. before a restart) in the wheel."""
        now = time.monotonic()
        margin = self._cfg.daemon.flush_interval_s
        for delivery_id, due_in_s in await self._store.near_due(
            self._cfg.daemon.retry_horizon_s, NEAR_DUE_BATCH
        ):
            self._wheel.add(delivery_id, now + due_in_s + margin)
        self._wheel_loaded_at = now

    async def _pause(self, seconds: float) -> None:
        """Back off after a database error; drain() cuts it short."""
        await self._wait_event(self._stopped, seconds)

    @staticmethod
    async def _wait_event(event: asyncio.Event, timeout_s: float) -> None:
        try:
            async with asyncio.timeout(timeout_s):
                await event.wait()
        except TimeoutError:
            pass

    # -- from claim to the ledger --------------------------------------------------------------

    async def _dispatch(self, deliveries: list[Delivery], lease_from: float) -> None:
        if not deliveries:
            return
        # A claimed delivery is pending in the database, so its endpoint was enabled when it was
        # claimed: if the cache says otherwise (or does not know it), the cache is stale.
        if any(
            (rt := self._endpoints.get(d.endpoint_id)) is None or not rt.sendable
            for d in deliveries
        ):
            await self._refresh_endpoints()
        lease_ends_at = lease_from + self._cfg.daemon.lease_s
        bodies: dict[int, bytes] = {}
        ledger = self.ledger
        for d in deliveries:
            rt = self._endpoints.get(d.endpoint_id)
            if rt is None or rt.deleted:
                self.recorder.settle(d, DeliveryState.FAILED, "endpoint deleted")
                continue
            if not rt.sendable:
                if rt.problem is not None:
                    self.recorder.settle(d, DeliveryState.FAILED, f"cannot send: {rt.problem}")
                else:
                    self.recorder.settle(d, DeliveryState.PAUSED, "endpoint disabled")
                continue
            if rt.held >= ledger.endpoint_cap(rt):
                # One claim can bring more of an endpoint than its queue should hold (its limit
                # shrank meanwhile): the rest go back unattempted instead of waiting on a lease.
                self.recorder.give_back_delivery(d)
                rt.backlog = True
                self._due_wanted = True
                continue
            body = bodies.get(d.event_id)
            if body is None:
                body = bodies[d.event_id] = build_body(
                    d.event_type, d.published_at, d.payload, d.event_id, d.ordering_key
                )
            assert rt.origin is not None
            ledger.admit(Held(d, rt, rt.origin, body, lease_ends_at))

    def _give_back(self, held: Held) -> None:
        self.recorder.give_back(held)
        held.rt.backlog = True
        self._due_wanted = True

    # -- one attempt ---------------------------------------------------------------------------

    async def _attempt(self, held: Held) -> None:
        """Attempt one held delivery and end it exactly once (run by an in-flight worker)."""
        rt = held.rt
        d = held.delivery
        try:
            now = time.monotonic()
            # The whole attempt (connect, request, the one fresh-connection resend, body read)
            # must end a margin before the lease does, with time left to write the outcome.
            deadline = held.lease_ends_at - LEASE_MARGIN_S - self._cfg.daemon.flush_interval_s
            if self._stopping or not rt.breaker.allow(now):
                self._give_back(held)
                return
            if rt.deleted:
                self.recorder.settle_held(held, DeliveryState.FAILED, "endpoint deleted")
                return
            if not rt.sendable:
                if rt.problem is not None:
                    reason = f"cannot send: {rt.problem}"
                    self.recorder.settle_held(held, DeliveryState.FAILED, reason)
                else:
                    self.recorder.settle_held(held, DeliveryState.PAUSED, "endpoint disabled")
                return
            if deadline - now < rt.total_timeout_s - QUEUE_SLACK_S:
                # Too close to the end of its lease for a full attempt: give it back unattempted.
                self._give_back(held)
                return
            held.sending = True
            held.started_unix_s = time.time()
            host_gauge = self._m_host.get(held.origin)
            if host_gauge is None:
                host_gauge = self._m_host[held.origin] = self._metrics.requests_in_flight.labels(
                    self._metrics.host(held.origin.host)
                )
            host_gauge.inc()
            try:
                cls, rec = await attempt(
                    self._pools,
                    rt,
                    d,
                    webhook_id(self._install_id, d.event_id),
                    held.body,
                    max_retry_after_s=self._cfg.http.max_retry_after_s,
                    disable_on_gone=self._cfg.http.disable_on_gone,
                    budget_s=deadline - time.monotonic(),
                )
            finally:
                host_gauge.dec()
            self.recorder.attempted(held, cls, rec)
        except asyncio.CancelledError:
            self._end_unfinished(held)
            raise
        except Exception:
            # A bug must not strand the delivery until its lease expires: log it, end it.
            log.exception("delivery %d: unexpected error", d.id)
            self._metrics.internal_errors.inc()
            self._end_unfinished(held)

    def _end_unfinished(self, held: Held) -> None:
        if held.ended:
            return
        if held.sending:
            # Cut off mid-request: the receiver may have seen it, so it counts as an attempt.
            self.recorder.cancelled(held)
        else:
            self._give_back(held)

    # -- side effects on endpoints, run as owned background tasks -----------------------------

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        async def guarded() -> None:
            try:
                await coro
            except StoreUnavailable as exc:
                self._metrics.db_errors.inc()
                log.warning("endpoint update failed (%s)", exc)

        task = asyncio.create_task(guarded())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- shutdown -------------------------------------------------------------------------------

    async def drain(self, grace_s: float) -> None:
        """Stop claiming; let sending attempts finish within `grace_s`; give back the rest.

        Queued deliveries (not yet sending) are given back at once; attempts still running after
        the grace period are cancelled and recorded as attempts (the receiver may have seen them:
        at-least-once). Outcomes go to the writer; the caller flushes it.
        """
        self._stopping = True
        self.planner.wake()
        self.ledger.room.set()
        self._stopped.set()
        await self.ledger.drain(grace_s)
        if self._background:
            await asyncio.wait(set(self._background), timeout=5)
