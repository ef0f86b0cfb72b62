"""The wake-up planner: when the claim loop looks for work, and when publishers must NOTIFY.

States (docs/design-notes.md item 1: a NOTIFY takes a global lock at commit, so publishers send
one only while no daemon is awake):

    working ──claims come back empty──► lingering ──`linger_s` without work──► asleep
       ▲                                   │ probe the outbox every `awake_poll_s`      │
       └──── work found (a probe, a NOTIFY, a timer, the polling fallback) ◄────────────┘

- *working* and *lingering*: the daemon holds the awake lock, so publishers send no NOTIFY. While
  lingering it probes the outbox every `awake_poll_s` (one index probe), so under steady load a new
  event is seen within about that long, with no NOTIFY and no linger to wait out.
- *asleep*: the lock is given back, so the next publish NOTIFYs. Order matters: first give the lock
  back, then look once more (an event committed just before the release sent no NOTIFY), and once
  again `recheck_s` later (a publisher that tried the lock just before the release may commit just
  after that look). The polling fallback (`poll_interval_s`), due retries and breaker cool-downs
  bound the sleep.

The planner does no I/O of its own: the claim loop passes the probe and the lock in.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from hookd.config import DaemonConfig


async def _no_lock(awake: bool) -> bool:
    return False


class WakePlanner:
    """Owns the awake/asleep state, the awake lock and the waits between looks for work.

    `set_awake(True/False)` takes or gives back the awake lock and returns whether it is held (the
    daemon wires it to the listener). `wake()` is a NOTIFY or another reason to look at once.
    `asleep` is set while the loop sleeps with only a NOTIFY, a timer or the polling fallback to wake
    it (tests wait on it).
    """

    def __init__(self, cfg: DaemonConfig) -> None:
        self._cfg = cfg
        self._signal = asyncio.Event()
        self._notified = False
        self._sleeping = False
        self.asleep = asyncio.Event()
        self.set_awake: Callable[[bool], Awaitable[bool]] = _no_lock
        self.last_reason = ""
        """Why the last idle period ended: notify, probe, recheck, timer, signal or poll."""

    def reconfigure(self, cfg: DaemonConfig) -> None:
        """Apply reloaded timings from the next wait on."""
        self._cfg = cfg
        self.wake()

    # -- signals -------------------------------------------------------------------------------

    def notify(self) -> None:
        """A NOTIFY arrived: new events were committed while we slept."""
        self._notified = True
        self._signal.set()

    def wake(self) -> None:
        """Look for work at once (room freed, a retry planned earlier, a reconnect, shutdown)."""
        self._signal.set()

    # -- the protocol --------------------------------------------------------------------------

    async def working(self) -> None:
        """Claims found work: hold the awake lock (cheap when it is already held)."""
        self._sleeping = False
        await self.set_awake(True)

    async def idle(
        self,
        probe: Callable[[], Awaitable[bool]],
        wake_at: Callable[[], float | None],
    ) -> None:
        """Wait until there is probably work: returns when the claim loop should claim again.

        `probe()` looks for waiting events cheaply (StoreUnavailable propagates to the caller);
        `wake_at()` gives the monotonic time of the next timer (due retry, breaker cool-down) or
        None. Sets `last_reason`.
        """
        cfg = self._cfg
        if not self._sleeping:
            # Lingering: awake lock held, so publishers do not NOTIFY; probe instead.
            quiet_until = time.monotonic() + cfg.idle_linger_s
            while True:
                now = time.monotonic()
                if now >= quiet_until:
                    break
                due = wake_at()
                if due is not None and due <= now:
                    self.last_reason = "timer"
                    return
                step_s = min(cfg.awake_poll_s, quiet_until - now)
                if due is not None:
                    step_s = min(step_s, due - now)
                if await self._wait(step_s):
                    self.last_reason = "signal"
                    return
                if await probe():
                    self.last_reason = "probe"
                    return
            # Going to sleep: give the lock back first, then look once more.
            self._signal.clear()
            self._notified = False
            await self.set_awake(False)
            self._sleeping = True
            if await probe():
                self.last_reason = "probe"
                await self.working()
                return
            recheck_at: float | None = time.monotonic() + cfg.idle_recheck_s
        else:
            recheck_at = None
        while True:
            now = time.monotonic()
            timeout_s = cfg.poll_interval_s
            due = wake_at()
            if due is not None:
                timeout_s = min(timeout_s, due - now)
            if recheck_at is not None:
                timeout_s = min(timeout_s, recheck_at - now)
            if recheck_at is None:
                self.asleep.set()
            try:
                signalled = await self._wait(max(0.0, timeout_s))
            finally:
                self.asleep.clear()
            if self._notified:
                self._notified = False
                self.last_reason = "notify"
                await self.working()
                return
            if signalled:
                self.last_reason = "signal"
                return
            now = time.monotonic()
            if recheck_at is not None and now >= recheck_at:
                recheck_at = None
                if await probe():
                    self.last_reason = "recheck"
                    await self.working()
                    return
                continue
            due = wake_at()
            self.last_reason = "timer" if due is not None and due <= now + 1e-3 else "poll"
            return

    async def _wait(self, timeout_s: float) -> bool:
        """Wait for a signal at most `timeout_s`; True if one came (and clear it)."""
        if not self._signal.is_set():
            try:
                async with asyncio.timeout(timeout_s):
                    await self._signal.wait()
            except TimeoutError:
                return False
        self._signal.clear()
        return True
