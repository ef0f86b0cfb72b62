"""The in-flight ledger: every delivery this process holds, the counts that bound them, and the
worker tasks that send them.

A leased delivery is *held* from its claim until it ends (an attempt's outcome, a give-back or a
settle). Held deliveries wait in their origin's lane; per-origin worker loops take the next one
whose endpoint, origin and process all have a free sending slot, so a slow or dead receiver can
only use its own slots and nothing waits on a lock it cannot get. Counts are kept per endpoint
(`EndpointRuntime.held`, `.sending`), per origin and per process; they change synchronously,
with no await between taking a slot and recording it.

Workers are owned here: no task outlives `drain()`. One worker per concurrent request of an origin
(at most `per_host_limit`); a worker that finds nothing startable ends, and the next admission or
a finished request starts one again.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from prometheus_client import Gauge

from hookd.config import Config
from hookd.hostpool import Origin
from hookd.models import Delivery
from hookd.runtime import EndpointRuntime

log = logging.getLogger("hookd.inflight")


@dataclass(eq=False, slots=True)
class Held:
    """A delivery leased to this process, with what is needed to attempt it.

    `lease_ends_at` is monotonic seconds, measured from before the claim query was sent, so it is
    never later than the lease the database recorded.
    """

    delivery: Delivery
    rt: EndpointRuntime
    origin: Origin
    body: bytes
    lease_ends_at: float
    sending: bool = False
    """True once its request may have reached the receiver."""
    ended: bool = False
    """True once its outcome was handed to the writer (see hookd/recorder.py)."""
    started_unix_s: float = 0.0


class _Lane:
    """One origin's held deliveries, queued per endpoint and taken round-robin."""

    __slots__ = ("order", "queued", "sending", "waiting", "workers")

    def __init__(self) -> None:
        self.waiting: dict[int, deque[Held]] = {}
        self.order: deque[int] = deque()
        self.queued = 0
        self.sending = 0
        self.workers = 0

    def put(self, held: Held) -> None:
        ep = held.delivery.endpoint_id
        q = self.waiting.get(ep)
        if q is None:
            q = self.waiting[ep] = deque()
            self.order.append(ep)
        q.append(held)
        self.queued += 1

    def take(self) -> Held | None:
        """The next delivery whose endpoint has a free slot (round-robin), or None."""
        order = self.order
        for _ in range(len(order)):
            ep = order[0]
            q = self.waiting[ep]
            rt = q[0].rt
            if rt.sending < rt.limit.limit:
                held = q.popleft()
                self.queued -= 1
                if q:
                    order.rotate(-1)
                else:
                    del self.waiting[ep]
                    order.popleft()
                return held
            order.rotate(-1)
        return None

    def drain(self) -> list[Held]:
        out = [h for q in self.waiting.values() for h in q]
        self.queued = 0
        self.waiting.clear()
        self.order.clear()
        return out


class InFlight:
    """Counts, queues and sends held deliveries.

    `run_one(held)` is the coroutine that attempts one delivery and ends it exactly once (the
    dispatcher's, which uses the recorder); `give_back(held)` ends a delivery that will not be
    attempted (at drain). `gauge` shows `held`. `on_room()` is called when a delivery of an
    endpoint with a backlog in the database (or of a full origin) ends, so the claim loop can
    take more.
    """

    def __init__(
        self,
        cfg: Config,
        run_one: Callable[[Held], Awaitable[None]],
        give_back: Callable[[Held], None],
        on_room: Callable[[], None],
        gauge: Gauge,
    ) -> None:
        self._cfg = cfg
        self._gauge = gauge
        self._run_one = run_one
        self._give_back = give_back
        self._on_room = on_room
        self._lanes: dict[Origin, _Lane] = {}
        self._workers: set[asyncio.Task[None]] = set()
        self._worker_count = 0
        """Workers started and not yet ended (at most `max_concurrent_requests`)."""
        self._starved: set[Origin] = set()
        """Lanes that stopped at the process-wide request limit, to be topped up first."""
        self.origin_held: Counter[Origin] = Counter()
        self.held = 0
        """Deliveries held by this process now."""
        self.sending = 0
        """Requests in flight in this process now."""
        self.stopping = False
        self.room = asyncio.Event()
        """Set whenever a held delivery ends (the claim loop waits on it when the process is full)."""

    def reconfigure(self, cfg: Config) -> None:
        """Apply reloaded limits; lanes are topped up to the new ones at once."""
        self._cfg = cfg
        for origin in list(self._lanes):
            self._pump(origin)

    # -- caps the claim loop reads ---------------------------------------------------------------

    def endpoint_cap(self, rt: EndpointRuntime) -> int:
        """How many deliveries of `rt` this process may hold: twice its current limit (its own
        setting, halved by back-off), so one claim round keeps it busy without a long queue."""
        return 2 * rt.limit.limit

    def origin_cap(self) -> int:
        """How many deliveries of one origin this process may hold."""
        return 2 * self._cfg.http.per_host_limit

    # -- admission -------------------------------------------------------------------------------

    def admit(self, held: Held) -> None:
        """Hold `held` and queue it on its origin's lane (synchronous: counted before any await).

        After `drain()` began (a claim that was under way when it did), the delivery is given back
        at once instead.
        """
        if self.stopping:
            self._give_back(held)
            return
        held.rt.held += 1
        self.origin_held[held.origin] += 1
        self.held += 1
        self._gauge.set(self.held)
        lane = self._lanes.get(held.origin)
        if lane is None:
            lane = self._lanes[held.origin] = _Lane()
        lane.put(held)
        self._pump(held.origin)

    def _pump(self, origin: Origin) -> None:
        """Start workers for `origin` while it has queued deliveries and free slots.

        A lane that finds the process-wide request limit reached is marked starved; a worker of
        another lane gives its slot up after its current request, so origins take turns.
        """
        lane = self._lanes.get(origin)
        if lane is None or self.stopping:
            return
        http = self._cfg.http
        while lane.workers < http.per_host_limit and lane.workers - lane.sending < lane.queued:
            if self._worker_count >= http.max_concurrent_requests:
                self._starved.add(origin)
                return
            lane.workers += 1
            self._worker_count += 1
            task = asyncio.create_task(self._work(origin, lane))
            self._workers.add(task)
            task.add_done_callback(self._workers.discard)

    async def _work(self, origin: Origin, lane: _Lane) -> None:
        """Send deliveries of one origin, one at a time, until none can start (or another origin
        waits for a slot under the process-wide limit)."""
        first = True
        try:
            while not self.stopping:
                if not first and self._starved - {origin}:
                    break  # after one request at least: another origin waits for this slot
                first = False
                held = lane.take()
                if held is None:
                    return
                rt = held.rt
                rt.sending += 1
                lane.sending += 1
                self.sending += 1
                try:
                    await self._run_one(held)
                finally:
                    rt.sending -= 1
                    lane.sending -= 1
                    self.sending -= 1
                    self._release(held)
        finally:
            lane.workers -= 1
            self._worker_count -= 1
            if not self.stopping:
                for other in [o for o in self._starved if o != origin]:
                    self._starved.discard(other)
                    self._pump(other)
                if lane.waiting:
                    self._pump(origin)
            if not lane.waiting and not lane.workers and not lane.sending:
                self._lanes.pop(origin, None)

    def _release(self, held: Held) -> None:
        rt = held.rt
        # Room that the claim loop can use: the endpoint has a backlog in the database, or the
        # origin was full (other endpoints of it may have been held back).
        at_cap = rt.backlog or self.origin_held[held.origin] == self.origin_cap()
        rt.held -= 1
        self.origin_held[held.origin] -= 1
        if not self.origin_held[held.origin]:
            del self.origin_held[held.origin]
        self.held -= 1
        self._gauge.set(self.held)
        self.room.set()
        if at_cap:
            self._on_room()

    # -- shutdown --------------------------------------------------------------------------------

    async def drain(self, grace_s: float) -> None:
        """Stop starting requests; give back queued deliveries now; let requests in flight finish
        within `grace_s` seconds, then cancel them (their ends are recorded by `run_one`)."""
        self.stopping = True
        for lane in list(self._lanes.values()):
            for held in lane.drain():
                self._give_back(held)
                self._release(held)
        workers = set(self._workers)
        if workers:
            _, still = await asyncio.wait(workers, timeout=grace_s)
            for task in still:
                task.cancel()
            if still:
                await asyncio.wait(still)
