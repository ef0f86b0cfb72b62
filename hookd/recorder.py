"""The recorder: the one place where a delivery held by this process ends.

Every held delivery ends exactly once, in one of four ways, each building one `Outcome` and handing
it (with its attempt-log row, if a request was made) to the writer once:

- `attempted`: a request was made; hookd/outcome.py decides delivered / retry / dead letter /
  paused, and the endpoint's limit, breaker, metrics and the retry timer are updated;
- `give_back`: never sent; the lease goes back, due at once, the attempt counter unchanged;
- `settle`: cannot be attempted (endpoint deleted, disabled, or unsendable): a final or paused
  state, no attempt logged;
- `cancelled`: the request was cut off at shutdown; the receiver may have seen it, so it counts
  as an attempt and is due again at once.

The writer's buffer holds these until the database takes them (see hookd/writer.py).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any

from hookd.classify import Classification
from hookd.config import Config
from hookd.inflight import Held
from hookd.logs import RateLimitedLog
from hookd.metrics import Metrics
from hookd.models import AttemptRecord, Delivery, DeliveryState, Outcome
from hookd.outcome import decide
from hookd.runtime import EndpointRuntime
from hookd.store import Store
from hookd.timerwheel import TimerWheel
from hookd.writer import OutcomeWriter

log = logging.getLogger("hookd.recorder")

FAILURES_BEFORE_SLOW_DOWN = 3
"""Consecutive failed attempts of an endpoint after which each further failure halves its
concurrency limit (success grows it back: hookd/limits.py)."""


class Recorder:
    """Ends deliveries. `spawn(coro)` runs a side effect on an endpoint (disable on 410, breaker
    state) as an owned background task; `replan(due)` tells the claim loop a retry was planned for
    monotonic time `due` (it may sleep past it)."""

    def __init__(
        self,
        cfg: Config,
        store: Store,
        writer: OutcomeWriter,
        metrics: Metrics,
        wheel: TimerWheel[int],
        spawn: Callable[[Coroutine[Any, Any, Any]], None],
        replan: Callable[[float], None],
    ) -> None:
        self._cfg = cfg
        self._store = store
        self._writer = writer
        self._metrics = metrics
        self._wheel = wheel
        self._spawn = spawn
        self._replan = replan
        self._failure_log = RateLimitedLog(log, cfg.log.failed_attempts_per_s)
        metrics.limit_endpoint_labels(cfg.admin.max_endpoint_labels)
        # Labelled children looked up once: `.labels()` on every attempt shows in profiles.
        self._m_outcome = {
            o: metrics.deliveries.labels(o)
            for o in ("delivered", "retry_scheduled", "failed", "paused")
        }
        self._m_status: dict[str, Any] = {}

    def reconfigure(self, cfg: Config) -> None:
        """Apply a reloaded configuration (log rate, horizons, endpoint label limit)."""
        self._cfg = cfg
        self._failure_log = RateLimitedLog(log, cfg.log.failed_attempts_per_s)
        self._metrics.limit_endpoint_labels(cfg.admin.max_endpoint_labels)

    # -- the four ends -----------------------------------------------------------------------------

    def attempted(self, held: Held, cls: Classification, rec: AttemptRecord) -> None:
        """A request was made: write its outcome and attempt row; update limit, breaker, timer."""
        if not self._end(held):
            return
        d, rt = held.delivery, held.rt
        m = self._metrics
        status = self._m_status.get(cls.status_class)
        if status is None:
            status = self._m_status[cls.status_class] = m.attempts.labels(cls.status_class)
        status.inc()
        ep_id = rt.endpoint.id
        per_endpoint = m.endpoint(ep_id)
        per_endpoint.attempts[cls.status_class].inc()
        m.attempt_duration.observe(rec.duration_s)
        now = time.monotonic()
        outcome = decide(d, cls, rec, rt.policy, time.time(), random.random())
        # Ended (delivered, dead-lettered, paused): the next delivery of its key may go next.
        ends_key = d.ordering_key is not None and outcome.state is not DeliveryState.PENDING
        self._writer.add(outcome, rec, releases_key=ends_key)
        if outcome.state is DeliveryState.DELIVERED:
            self._m_outcome["delivered"].inc()
            per_endpoint.delivered.inc()
            m.lag.observe(max(0.0, time.time() - d.published_at.timestamp()))
            rt.limit.speed_up()
            if rt.breaker.state != "closed":
                self._breaker_changed(rt, None)
            rt.breaker.record(True, now)
            per_endpoint.set_consecutive_failures(ep_id, 0)
            return
        if outcome.state is not DeliveryState.FAILED:
            # A dead letter gets its own line below instead: one line per delivery that ends.
            self._failure_log.warning(
                "endpoint %d delivery %d attempt %d failed: %s",
                rt.endpoint.id,
                d.id,
                d.attempt,
                rec.error,
            )
        if cls.slow_down or rt.breaker.failures >= FAILURES_BEFORE_SLOW_DOWN:
            # Back-pressure (429, 503, timeouts) at once; any other failure once it persists: a
            # receiver that fails everything gets one request at a time, not a full window, and
            # its storm cannot crowd healthy endpoints out of the event loop.
            rt.limit.slow_down()
        opened = rt.breaker.record(False, now)
        per_endpoint.set_consecutive_failures(ep_id, rt.breaker.failures)
        if opened:
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
            per_endpoint.failed.inc()
            log.warning(
                "endpoint %d delivery %d (%s) dead-lettered after %d %s: %s",
                rt.endpoint.id,
                d.id,
                d.event_type,
                d.attempt,
                "attempt" if d.attempt == 1 else "attempts",
                rec.error,
            )
        else:
            self._m_outcome["retry_scheduled"].inc()
            delay = outcome.retry_in_s or 0.0
            if delay <= self._cfg.daemon.retry_horizon_s:
                due = now + delay + self._cfg.daemon.flush_interval_s
                self._wheel.add(d.id, due)
                self._replan(due)

    def give_back(self, held: Held) -> None:
        """Return the lease unattempted: due again at once, the attempt counter unchanged."""
        if self._end(held):
            self.give_back_delivery(held.delivery)

    def give_back_delivery(self, d: Delivery) -> None:
        """`give_back` for a claimed delivery that was never held (a claim larger than its room)."""
        self._writer.add(
            Outcome(d.id, d.attempt, DeliveryState.PENDING, 0.0, None, None, counted=False), None
        )

    def settle(self, d: Delivery, state: DeliveryState, reason: str) -> None:
        """A final (or paused) state for a claimed delivery that cannot be attempted; no attempt
        is logged."""
        self._writer.add(
            Outcome(d.id, d.attempt, state, None, None, reason, counted=False),
            None,
            releases_key=d.ordering_key is not None,
        )
        self._m_outcome["failed" if state is DeliveryState.FAILED else "paused"].inc()
        if state is DeliveryState.FAILED:
            self._metrics.endpoint(d.endpoint_id).failed.inc()
            log.warning(
                "endpoint %d delivery %d (%s) dead-lettered: %s",
                d.endpoint_id,
                d.id,
                d.event_type,
                reason,
            )

    def settle_held(self, held: Held, state: DeliveryState, reason: str) -> None:
        """`settle` for a held delivery."""
        if self._end(held):
            self.settle(held.delivery, state, reason)

    def cancelled(self, held: Held) -> None:
        """The request was cut off at shutdown: an attempt that may have reached the receiver."""
        if not self._end(held):
            return
        d = held.delivery
        reason = "attempt cancelled at shutdown"
        duration = max(0.0, time.time() - held.started_unix_s)
        rec = AttemptRecord(d.id, d.attempt, held.started_unix_s, duration, None, reason, None)
        self._writer.add(Outcome(d.id, d.attempt, DeliveryState.PENDING, 0.0, None, reason), rec)
        self._m_outcome["retry_scheduled"].inc()

    @staticmethod
    def _end(held: Held) -> bool:
        """Mark `held` ended; False (and a log line) if it already was: one end per delivery."""
        if held.ended:
            log.error("delivery %d ended twice; the second end is ignored", held.delivery.id)
            return False
        held.ended = True
        return True

    # -- side effects on endpoints -------------------------------------------------------------

    def _disable(self, rt: EndpointRuntime, reason: str) -> None:
        if rt.disabled:
            return
        rt.disabled = True
        log.warning("endpoint %d disabled: %s", rt.endpoint.id, reason)
        self._spawn(self._store.set_endpoint_enabled(rt.endpoint.id, False, reason))

    def _breaker_changed(self, rt: EndpointRuntime, open_for_s: float | None) -> None:
        until = None if open_for_s is None else datetime.now(UTC) + timedelta(seconds=open_for_s)
        self._spawn(self._store.set_breaker(rt.endpoint.id, until))
