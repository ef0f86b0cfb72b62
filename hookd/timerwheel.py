"""Hierarchical timing wheel: O(1) add and cancel for many pending retry timers.

hookd keeps one timer per delivery that waits for its next attempt. A loop timer (``call_at``) per
pending retry costs about 0.5 KiB and an O(log n) heap operation (docs/design-notes.md item 11);
this wheel costs about 72 bytes per pending timer (measured with tracemalloc on CPython 3.11,
100,000 timers, caller-owned key and due objects excluded; see ``tests/unit/test_timerwheel.py``)
and O(1) per add and cancel. The persisted ``next_attempt_at`` stays the truth, so a wheel is
rebuilt from the database on start and never needs to be saved.

The data structure is the hierarchical timing wheel of Varghese and Lauck, "Hashed and Hierarchical
Timing Wheels" (SOSP 1987), with the placement rule of the Linux kernel's timer wheel: a timer lives
at the level of the highest base-``slots`` digit in which its tick differs from the wheel's cursor,
so level 0 holds the current rotation one tick per slot and each higher level covers ``slots`` times
the span of the one below. Levels are added on demand, so a due any distance in the future is held
without an overflow list. When the cursor enters a higher-level slot, that slot is cascaded: its
timers move down to the level their tick now calls for. Each timer cascades at most once per level.

Time is passed in, never read: every time is a float in seconds on one clock (hookd uses the event
loop's monotonic ``loop.time()``). Nothing here does I/O or touches asyncio.

Firing rules (what ``advance`` guarantees; the unit tests check exactly these):

* never early: a timer fires only from an ``advance(now)`` with ``due <= now``;
* never more than a tick late: it fires at the latest on the first ``advance(now)`` with
  ``now >= due + tick_s`` (as computed in float arithmetic);
* exactly once: a fired or cancelled timer is forgotten, and ``cancel`` then returns False;
* a timer added with ``due`` at or before the wheel's current time (the last ``advance``, or the
  constructor's ``now``) fires on the next ``advance`` whose ``now`` is not earlier than that time;
* one ``advance`` returns its keys ordered by due, ties in insertion order;
* across calls: if timer X is returned by an earlier ``advance(now_x)`` than timer Y, and Y was
  already pending during that call, then ``X.due <= now_x < Y.due + tick_s``. So keys come out in
  nondecreasing due order modulo one tick, except that a timer added with a due earlier than timers
  already fired can only fire after them.

Between ticks the wheel is coarse on purpose: a timer whose due has passed but whose tick has not
ended waits for the end of its tick, so repeated advances within one tick cost nothing. Timers whose
due and due + tick_s fall in the same tick because of float rounding (and past-due timers) sit in a
short "near" list that every ``advance`` checks exactly, which keeps the rules above exact in float
arithmetic. If ``tick_s`` is below the clock's float resolution that list holds everything and the
wheel degrades to O(n) per advance, so keep ``tick_s`` well above ``now * 2**-52``.
"""

from __future__ import annotations

import math
from operator import attrgetter
from typing import Any, Generic, TypeVar

__all__ = ["TimerHandle", "TimerWheel"]

K = TypeVar("K")

# TimerHandle._level holds the wheel level (>= 0) of a pending timer, or one of these states.
_NEAR = -1  # pending in the near list, which every advance() checks exactly
_FIRED = -2
_CANCELLED = -3

_by_due = attrgetter("_due")


class TimerHandle(Generic[K]):
    """A pending timer's handle, returned by ``TimerWheel.add`` and accepted by ``cancel``.

    A node of an intrusive doubly linked list (one list per wheel slot), so ``cancel`` unlinks it in
    O(1) without knowing its slot. Only the wheel that created a handle may cancel it. Handles are
    not created directly. ``key`` and ``due`` (seconds, the wheel's clock) are read-only views.
    """

    __slots__ = ("_due", "_key", "_level", "_next", "_prev")

    _prev: TimerHandle[K]
    _next: TimerHandle[K]
    _key: K
    _due: float
    _level: int

    def __init__(self, key: K, due: float) -> None:
        self._key = key
        self._due = due
        self._level = _FIRED
        self._prev = self._next = _DETACHED

    @property
    def key(self) -> K:
        """The key ``advance`` returns when this timer fires."""
        return self._key

    @property
    def due(self) -> float:
        """When the timer is due, in seconds on the wheel's clock."""
        return self._due

    @property
    def pending(self) -> bool:
        """True until the timer fires or is cancelled."""
        return self._level >= _NEAR

    @property
    def cancelled(self) -> bool:
        """True if ``cancel`` removed this timer before it fired."""
        return self._level == _CANCELLED

    def __repr__(self) -> str:
        state = "pending" if self.pending else ("cancelled" if self.cancelled else "fired")
        return f"<TimerHandle key={self._key!r} due={self._due!r} {state}>"


def _new_sentinel() -> TimerHandle[Any]:
    """Return the head of an empty circular list; it is never handed out and has no key."""
    head: TimerHandle[Any] = TimerHandle.__new__(TimerHandle)
    head._prev = head._next = head
    head._level = _FIRED
    head._due = math.inf
    return head


# Where fired and cancelled handles point, so that they hold no references into the wheel.
_DETACHED: TimerHandle[Any] = _new_sentinel()


class TimerWheel(Generic[K]):
    """Pending timers keyed by ``K``, fired in batches by ``advance(now)``.

    ``tick_s`` is the resolution in seconds: timers fire at most one tick after their due. ``now``
    is the current time on the caller's clock (seconds); the wheel's ticks count from it. ``slots``
    is the number of slots per level (level ``L`` spans ``tick_s * slots ** (L + 1)`` seconds).

    Raises ValueError when ``tick_s`` is not a positive finite number, ``now`` is not finite or
    ``slots`` is not an int >= 2. Not thread-safe; meant for one event loop.
    """

    __slots__ = (
        "_counts",
        "_cursor",
        "_levels",
        "_near",
        "_near_count",
        "_next_due_cache",
        "_next_due_valid",
        "_now",
        "_origin",
        "_pending",
        "_slots",
        "_spans",
        "_tick_s",
    )

    def __init__(self, tick_s: float, now: float, slots: int = 256) -> None:
        if not (math.isfinite(tick_s) and tick_s > 0):
            raise ValueError(f"tick_s must be a positive finite number of seconds, got {tick_s!r}")
        if not math.isfinite(now):
            raise ValueError(f"now must be a finite number of seconds, got {now!r}")
        if isinstance(slots, bool) or not isinstance(slots, int) or slots < 2:
            raise ValueError(f"slots must be an int >= 2, got {slots!r}")
        self._tick_s = float(tick_s)
        self._origin = float(now)
        self._now = float(now)
        self._slots = slots
        # Every tick below the cursor has been processed; the cursor is the tick of self._now.
        self._cursor = 0
        # _levels[L][i] is the head of slot i at level L, created on first use.
        self._levels: list[list[TimerHandle[Any] | None]] = []
        self._counts: list[int] = []  # pending timers per level, so empty levels cost nothing
        self._spans = [1, slots]  # _spans[L] = ticks covered by one slot at level L
        self._near: TimerHandle[Any] = _new_sentinel()
        self._near_count = 0
        self._pending = 0
        self._next_due_cache: float | None = None
        self._next_due_valid = True

    @property
    def tick_s(self) -> float:
        """The wheel's resolution in seconds."""
        return self._tick_s

    @property
    def now(self) -> float:
        """The latest time the wheel has been advanced to (or the constructor's ``now``)."""
        return self._now

    def __len__(self) -> int:
        """Return the number of pending timers (added, not yet fired, not cancelled)."""
        return self._pending

    def add(self, key: K, due: float) -> TimerHandle[K]:
        """Schedule ``key`` to fire at ``due`` (seconds, same clock as ``now``); O(1).

        A due at or before the wheel's current time fires on the next ``advance``. The same key may
        be added more than once; each add is a separate timer. Raises ValueError when ``due`` is
        not finite or so far away that its tick number overflows a float.
        """
        if not math.isfinite(due):
            raise ValueError(f"due must be a finite number of seconds, got {due!r}")
        handle = TimerHandle(key, due)
        if due <= self._now:
            self._link_near(handle)
        else:
            q = (due - self._origin) / self._tick_s
            if not math.isfinite(q):
                raise ValueError(f"due {due!r} is too far from now for tick_s={self._tick_s!r}")
            tick = math.floor(q)
            # The wheel fires a tick's timers once the clock is past the tick's end; that must
            # happen no later than due + tick_s. Float rounding can put due + tick_s in the same
            # tick as due; such rare timers go to the exactly checked near list instead.
            late = (due + self._tick_s - self._origin) / self._tick_s
            if tick < self._cursor or (math.isfinite(late) and math.floor(late) <= tick):
                self._link_near(handle)
            else:
                self._place(handle, tick)
        self._pending += 1
        # A new timer can only lower next_due if its due is below the cached value, because its
        # fire time is never earlier than its due.
        if self._next_due_valid and (self._next_due_cache is None or due < self._next_due_cache):
            self._next_due_valid = False
        return handle

    def cancel(self, handle: TimerHandle[K]) -> bool:
        """Remove a pending timer; O(1).

        Returns True if it was pending, False if it had already fired or been cancelled. The handle
        must come from this wheel.
        """
        level = handle._level
        if level < _NEAR:
            return False
        self._unlink(handle)
        if level == _NEAR:
            self._near_count -= 1
        else:
            self._counts[level] -= 1
        handle._level = _CANCELLED
        self._pending -= 1
        cached = self._next_due_cache
        if self._next_due_valid and cached is not None and handle._due <= cached:
            self._next_due_valid = False
        return True

    def advance(self, now: float) -> list[K]:
        """Move the wheel to ``now`` and return the keys of the timers that fire.

        Keys come ordered by due, ties in insertion order; see the module docstring for exactly
        which timers fire. ``now`` earlier than the wheel's current time is a no-op returning [].
        Cost: O(fired + levels * slots) at worst; O(fired + near list) while the tick is unchanged.
        Raises ValueError when ``now`` is not finite or too far away to count in ticks.
        """
        if not math.isfinite(now):
            raise ValueError(f"now must be a finite number of seconds, got {now!r}")
        if now < self._now:
            return []
        q = (now - self._origin) / self._tick_s
        if not math.isfinite(q):
            raise ValueError(f"now {now!r} is too far from the start for tick_s={self._tick_s!r}")
        self._now = now
        fired: list[TimerHandle[Any]] = []
        target = math.floor(q)
        if target > self._cursor:
            self._jump(target, fired)
        if self._near_count:
            head = self._near
            node = head._next
            while node is not head:
                following = node._next
                if node._due <= now:
                    self._unlink(node)
                    self._near_count -= 1
                    node._level = _FIRED
                    fired.append(node)
                node = following
        if not fired:
            return []
        self._pending -= len(fired)
        self._next_due_valid = False
        # Stable sort: equal dues always share a slot (or the near list, after any wheel timers
        # with that due), and lists keep insertion order, so ties stay in insertion order.
        fired.sort(key=_by_due)
        return [node._key for node in fired]

    def next_due(self) -> float | None:
        """Return the earliest time at which ``advance`` will fire a timer, or None when empty.

        The value lies between the earliest pending due and that due plus ``tick_s`` (the wheel
        rounds up to the end of the timer's tick), and ``advance(max(now, next_due()))`` fires at
        least one timer, so a caller can sleep until it without spinning. It may be below the
        current time when a past-due timer awaits the next advance. Cached; recomputing costs
        O(levels + slots + timers in the earliest non-empty slot above level 0).
        """
        if not self._next_due_valid:
            self._next_due_cache = self._compute_next_due()
            self._next_due_valid = True
        return self._next_due_cache

    # Internals. A pending timer with tick k >= cursor lives at level L, the highest digit (base
    # `slots`) in which k and the cursor differ (0 if none), in slot digit_L(k); so every timer at
    # level L > 0 is later than every timer below L, and level 0 holds the current rotation.

    def _tick_of(self, t: float) -> int:
        return math.floor((t - self._origin) / self._tick_s)

    def _link_near(self, handle: TimerHandle[Any]) -> None:
        head = self._near
        tail = head._prev
        tail._next = handle
        handle._prev = tail
        handle._next = head
        head._prev = handle
        handle._level = _NEAR
        self._near_count += 1

    @staticmethod
    def _unlink(handle: TimerHandle[Any]) -> None:
        before = handle._prev
        after = handle._next
        before._next = after
        after._prev = before
        handle._prev = handle._next = _DETACHED

    def _place(self, handle: TimerHandle[Any], tick: int) -> None:
        """Append ``handle`` (tick >= cursor) to the slot its tick calls for, adding levels."""
        cursor = self._cursor
        spans = self._spans
        level = 0
        while tick // spans[level + 1] != cursor // spans[level + 1]:
            level += 1
            if level + 1 == len(spans):
                spans.append(spans[-1] * self._slots)
        levels = self._levels
        while level >= len(levels):
            levels.append([None] * self._slots)
            self._counts.append(0)
        row = levels[level]
        index = (tick // spans[level]) % self._slots
        head = row[index]
        if head is None:
            head = row[index] = _new_sentinel()
        tail = head._prev
        tail._next = handle
        handle._prev = tail
        handle._next = head
        head._prev = handle
        handle._level = level
        self._counts[level] += 1

    def _jump(self, target: int, fired: list[TimerHandle[Any]]) -> None:
        """Move the cursor to ``target``: fire every timer with tick < target, re-place the rest.

        Works for any distance in one pass over the levels, lowest first, because at each level
        the slots wholly before ``target`` fire, the slot containing ``target`` cascades (its timers
        go to lower levels, already processed, placed against the new cursor), and later slots
        stay valid. If ``target`` has left the level's rotation, the whole level fires.
        """
        old = self._cursor
        self._cursor = target
        slots = self._slots
        spans = self._spans
        for level, row in enumerate(self._levels):
            if not self._counts[level]:
                continue
            span = spans[level]
            rotation = spans[level + 1]
            if old // rotation != target // rotation:
                for head in row:
                    if head is not None:
                        self._drain(head, fired)
                self._counts[level] = 0
                continue
            first = (old // span) % slots
            last = (target // span) % slots
            drained = 0
            for index in range(first, last):
                head = row[index]
                if head is not None:
                    drained += self._drain(head, fired)
            head = row[last]
            if level and head is not None and head._next is not head:
                node = head._next
                head._prev = head._next = head
                while node is not head:
                    following = node._next
                    tick = self._tick_of(node._due)
                    if tick < target:
                        node._prev = node._next = _DETACHED
                        node._level = _FIRED
                        fired.append(node)
                    else:
                        self._place(node, tick)
                    drained += 1
                    node = following
            self._counts[level] -= drained

    @staticmethod
    def _drain(head: TimerHandle[Any], fired: list[TimerHandle[Any]]) -> int:
        """Fire every timer in one slot's list and empty it; return how many fired."""
        node = head._next
        count = 0
        while node is not head:
            following = node._next
            node._prev = node._next = _DETACHED
            node._level = _FIRED
            fired.append(node)
            count += 1
            node = following
        head._prev = head._next = head
        return count

    def _compute_next_due(self) -> float | None:
        best: float | None = None
        if self._near_count:
            near = self._near
            node = near._next
            while node is not near:
                if best is None or node._due < best:
                    best = node._due
                node = node._next
        cursor = self._cursor
        for level, row in enumerate(self._levels):
            if not self._counts[level]:
                continue
            # The lowest non-empty level holds the earliest wheel timers, in the first non-empty
            # slot at or after the cursor's digit (earlier slots are empty at every level).
            span = self._spans[level]
            for index in range((cursor // span) % self._slots, self._slots):
                head = row[index]
                if head is not None and head._next is not head:
                    break
            else:  # pragma: no cover - the level's count says a slot is non-empty
                raise AssertionError("timer wheel level count out of sync")
            if level == 0:
                tick = cursor - cursor % self._slots + index
            else:
                tick = min(self._tick_of(node._due) for node in _iter_list(head))
            fire_at = self._fire_time(tick)
            if best is None or fire_at < best:
                best = fire_at
            break
        return best

    def _fire_time(self, tick: int) -> float:
        """Return the smallest float whose tick is past ``tick``: when that tick's timers fire."""
        t = self._origin + (tick + 1) * self._tick_s
        while self._tick_of(t) <= tick:
            t = math.nextafter(t, math.inf)
        while True:
            earlier = math.nextafter(t, -math.inf)
            if self._tick_of(earlier) <= tick:
                return t
            t = earlier


def _iter_list(head: TimerHandle[Any]) -> list[TimerHandle[Any]]:
    nodes = []
    node = head._next
    while node is not head:
        nodes.append(node)
        node = node._next
    return nodes
