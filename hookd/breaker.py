"""Circuit breaker per endpoint. Pure: no asyncio, no I/O; time (monotonic seconds) is passed in.

closed ── `failure_threshold` consecutive failures ──► open ── cool-down passed ──► half-open
half-open: one probe attempt is allowed; success ──► closed, failure ──► open with a doubled
cool-down (up to `max_cooldown_s`). While open, the endpoint's deliveries wait in the database and
no attempts are counted against them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class BreakerState(enum.StrEnum):
    """States of a circuit breaker."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class BreakerSettings:
    """Thresholds; defaults documented in config/hookd.example.toml ([breaker])."""

    failure_threshold: int = 10
    """Consecutive failed attempts that open the breaker."""
    cooldown_s: float = 30.0
    """Seconds the breaker stays open before the first probe."""
    max_cooldown_s: float = 600.0
    """Longest cool-down after repeated failed probes."""


class CircuitBreaker:
    """One endpoint's breaker. Call `allow()` before an attempt and `record()` after it."""

    __slots__ = ("_cooldown_s", "_failures", "_probe_out", "_settings", "open_until", "state")

    def __init__(self, settings: BreakerSettings) -> None:
        self._settings = settings
        self.state = BreakerState.CLOSED
        self._failures = 0
        self._cooldown_s = settings.cooldown_s
        self._probe_out = False
        self.open_until = 0.0
        """Monotonic time at which an open breaker lets a probe through."""

    @property
    def failures(self) -> int:
        """Failed attempts since the last success."""
        return self._failures

    def blocks_claims(self, now: float) -> bool:
        """True if no new delivery should be claimed for this endpoint now."""
        if self.state is BreakerState.OPEN:
            return now < self.open_until or self._probe_out
        return self.state is BreakerState.HALF_OPEN and self._probe_out

    def allow(self, now: float) -> bool:
        """May an attempt start now? In half-open state only one probe at a time is allowed."""
        if self.state is BreakerState.CLOSED:
            return True
        if self.state is BreakerState.OPEN:
            if now < self.open_until:
                return False
            self.state = BreakerState.HALF_OPEN
        if self._probe_out:
            return False
        self._probe_out = True
        return True

    def record(self, success: bool, now: float) -> bool:
        """Record an attempt's result; return True if this changed the state to open."""
        if success:
            self.state = BreakerState.CLOSED
            self._failures = 0
            self._cooldown_s = self._settings.cooldown_s
            self._probe_out = False
            return False
        self._failures += 1
        if self.state is BreakerState.HALF_OPEN:
            self._probe_out = False
            self._cooldown_s = min(self._cooldown_s * 2, self._settings.max_cooldown_s)
            return self._open(now)
        if self.state is BreakerState.CLOSED and self._failures >= self._settings.failure_threshold:
            return self._open(now)
        return False

    def _open(self, now: float) -> bool:
        self.state = BreakerState.OPEN
        self.open_until = now + self._cooldown_s
        return True
