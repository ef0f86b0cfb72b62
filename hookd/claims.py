"""How much of each endpoint a claim may take now, and which endpoints it looks at.

Owns the room computation behind every claim: `claim_rooms` (per-endpoint and per-origin caps,
held-back endpoints) and `ClaimWindow`, the round-robin window that, with more endpoints than free
slots, looks at only as many endpoints as the process can serve, takes turns between them, and
shares the free slots evenly. The dispatcher (hookd/dispatcher.py) calls it before each fan-out
and due claim; the caps themselves are the in-flight ledger's (hookd/inflight.py).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping

from hookd.config import DaemonConfig
from hookd.hostpool import Origin
from hookd.inflight import InFlight
from hookd.runtime import EndpointRuntime


def claim_rooms(
    endpoints: Iterable[tuple[int, EndpointRuntime]],
    origin_held: Mapping[Origin, int],
    endpoint_cap: Callable[[EndpointRuntime], int],
    origin_cap: int,
    claim_batch: int,
    now: float,
    want: int | None = None,
) -> tuple[list[tuple[int, int]], list[int], int]:
    """How many more deliveries of each endpoint a process may hold now.

    Returns (endpoint id, room) pairs with room > 0, the ids of endpoints held back, and how many
    endpoints were looked at. Held back are: an open breaker, a disabled endpoint, or a full
    queue, either the endpoint's own (`endpoint_cap(rt)`, from its own current limit) or its
    origin's (`origin_cap`) once the endpoint holds its fair share of that, so an endpoint with a
    huge backlog cannot starve another endpoint on the same host. Endpoints that cannot be sent
    to at all get `claim_batch` room, so their deliveries are claimed and settled. `now` is
    monotonic seconds (for breakers). With `want`, the look stops once that many sendable
    endpoints have room: with 10,000 endpoints and 1,000 free slots, a claim needs no more (the
    caller starts the next look where this one stopped).
    """
    items = endpoints if isinstance(endpoints, list) else list(endpoints)
    sharing = Counter(rt.origin for _, rt in items if rt.origin is not None and rt.held)
    rooms: list[tuple[int, int]] = []
    blocked: list[int] = []
    found = 0
    looked = 0
    for ep_id, rt in items:
        if want is not None and found >= want:
            break
        looked += 1
        if rt.problem is not None:
            rooms.append((ep_id, claim_batch))
            continue
        if not rt.sendable or rt.deleted or rt.breaker.blocks_claims(now):
            blocked.append(ep_id)
            continue
        room = endpoint_cap(rt) - rt.held
        if rt.origin is not None:
            # Up to what the origin has left; once it is full, up to a fair share of it.
            fair_share = max(1, origin_cap // max(1, sharing[rt.origin]))
            left = origin_cap - origin_held.get(rt.origin, 0)
            room = min(room, max(left, fair_share - rt.held))
        if room > 0:
            rooms.append((ep_id, room))
            found += 1
        else:
            blocked.append(ep_id)
    return rooms, blocked, looked


class ClaimWindow:
    """The rotation state of the claim window: where the next look starts, what the last saw."""

    def __init__(self) -> None:
        self.start = 0
        """Where `rooms` starts sharing free slots among endpoints (round-robin)."""
        self.partial = False
        """Whether the last `rooms` covered only a window of the endpoints."""
        self.had_backlog = False
        """Whether that window held endpoints known to have deliveries waiting."""
        self.looked = 0
        """How many endpoints the last due claim's `rooms` looked at."""

    def rooms(
        self,
        endpoints: dict[int, EndpointRuntime],
        ledger: InFlight,
        cfg: DaemonConfig,
        for_fan_out: bool = False,
    ) -> tuple[list[tuple[int, int]], list[int]]:
        """(endpoint, room) pairs this process may claim for now, and the endpoints held back.

        Never more sendable endpoints than free slots (each gets at least one): with thousands
        of endpoints a claim looks at only as many as it can serve, starting where the last
        look stopped, so every endpoint gets its turn (a cold start with a backlog for a
        thousand endpoints serves all of them from the start) and the cost of a claim does not
        grow with the number of endpoints.
        """
        free = cfg.max_in_flight - ledger.held
        items = list(endpoints.items())
        n = len(items)
        start = self.start % n if n else 0
        at = list(range(start, n)) + list(range(start))
        if n > free:
            # Only a window of them fits. For a due claim, endpoints known to have deliveries
            # waiting come first (a window of idle ones would come back empty); for a fan-out,
            # those without (new events for an idle endpoint are leased at once, not queued
            # behind a backlog's turn), and the fan-out's window does not move the rotation, or
            # the due claims would only ever see every other window.
            waiting = [i for i in at if items[i][1].backlog]
            idle = [i for i in at if not items[i][1].backlog]
            at = idle + waiting if for_fan_out else waiting + idle
        rooms, blocked, looked = claim_rooms(
            [items[i] for i in at],
            ledger.origin_held,
            ledger.endpoint_cap,
            ledger.origin_cap(),
            cfg.claim_batch,
            time.monotonic(),
            want=max(free, 0),
        )
        if not for_fan_out:
            self.partial = looked < n
            self.looked = looked
            self.had_backlog = any(items[i][1].backlog for i in at[:looked])
        if 0 < looked < n and not for_fan_out:
            # The next look starts after the last endpoint this one took, in rotation order.
            self.start = max((i - start) % n for i in at[:looked]) + start + 1
        # Never lease more than the process may hold; share what is free evenly, so that no
        # endpoint's room is spent by those listed before it. Unsendable endpoints are exempt:
        # their deliveries are settled at once, never held.
        capped: list[tuple[int, int]] = []
        sendable: list[tuple[int, int]] = []
        for ep, room in rooms:
            rt = endpoints[ep]
            (capped if rt.problem is not None else sendable).append((ep, room))
        for i, (ep, room) in enumerate(sendable):
            share = max(1, free // (len(sendable) - i)) if free > 0 else 0
            room = min(room, share)
            if room <= 0:
                blocked.append(ep)
                continue
            free -= room
            capped.append((ep, room))
        return capped, blocked
