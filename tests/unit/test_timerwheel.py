"""Unit tests for hookd.timerwheel: Hypothesis against a heapq model, plus edge cases."""

from __future__ import annotations

import heapq
import math
import time
import tracemalloc
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hookd.timerwheel import TimerHandle, TimerWheel

# ---------------------------------------------------------------------------------------------
# The model: a heap of pending timers. The wheel's coarseness means the model cannot say exactly
# which timers fire, only which must fire (now >= due + tick_s) and which may (due <= now).


@dataclass
class _Timer:
    key: int
    due: float
    seq: int
    handle: TimerHandle[int]
    added_before_advance: int  # number of advances made when it was added
    fired_in: int | None = None  # index of the advance that fired it
    cancelled: bool = False


@dataclass
class _Model:
    tick_s: float
    now: float
    heap: list[tuple[float, int]] = field(default_factory=list)  # (due, seq), lazily pruned
    timers: list[_Timer] = field(default_factory=list)
    pending: set[int] = field(default_factory=set)

    def add(self, timer: _Timer) -> None:
        self.timers.append(timer)
        self.pending.add(timer.seq)
        heapq.heappush(self.heap, (timer.due, timer.seq))

    def eligible(self, now: float) -> list[_Timer]:
        """Pending timers with due <= now, in (due, insertion) order."""
        out: list[_Timer] = []
        kept: list[tuple[float, int]] = []
        while self.heap and self.heap[0][0] <= now:
            due, seq = heapq.heappop(self.heap)
            if seq in self.pending:
                out.append(self.timers[seq])
                kept.append((due, seq))
        for item in kept:
            heapq.heappush(self.heap, item)
        return out

    def min_due(self) -> float | None:
        while self.heap and self.heap[0][1] not in self.pending:
            heapq.heappop(self.heap)
        return self.heap[0][0] if self.heap else None


_ticks_offset = st.one_of(
    st.floats(-3.0, 5.0, allow_nan=False),
    st.integers(-2, 6).map(float),  # exact tick multiples: boundary cases
    st.sampled_from([0.0, 0.5, 1.0, 1.5]),
    st.floats(0.0, 5_000.0),  # several wheel spans with the small slot counts below
    st.floats(0.0, 1e7),  # far beyond any span: many levels
)
_ticks_delta = st.one_of(
    st.floats(0.0, 3.0),
    st.integers(0, 4).map(float),
    st.floats(0.0, 300.0),
    st.floats(0.0, 1e7),
    st.floats(-3.0, 0.0),  # backwards: must be a no-op
)
_op = st.one_of(
    st.tuples(st.just("add"), _ticks_offset),
    st.tuples(st.just("add_same_due"), st.integers(0, 10_000)),
    st.tuples(st.just("cancel"), st.integers(0, 10_000)),
    st.tuples(st.just("advance"), _ticks_delta),
    st.tuples(st.just("advance_to_due"), st.tuples(st.integers(0, 10_000), st.integers(0, 2))),
    st.tuples(st.just("advance_to_next_due"), st.none()),
)


def _advance_and_check(wheel: TimerWheel[int], model: _Model, now: float, index: int) -> int:
    """Advance both; check the firing rules; return the index of the next advance."""
    if now < model.now:
        assert wheel.advance(now) == []
        return index
    got = wheel.advance(now)
    model.now = now
    eligible = model.eligible(now)
    by_key = {t.key: t for t in eligible}
    # Exactly once, never early: every returned key is pending with due <= now, no duplicates.
    assert len(set(got)) == len(got)
    assert set(got) <= by_key.keys()
    # Never more than one tick late.
    must = {t.key for t in eligible if now >= t.due + model.tick_s}
    assert must <= set(got)
    # One advance: ordered by due, ties in insertion order.
    fired = [by_key[k] for k in got]
    assert [(t.due, t.seq) for t in fired] == sorted((t.due, t.seq) for t in fired)
    for t in fired:
        t.fired_in = index
        model.pending.discard(t.seq)
        assert not t.handle.pending
    return index + 1


def _check_state(wheel: TimerWheel[int], model: _Model) -> None:
    assert len(wheel) == len(model.pending)
    min_due = model.min_due()
    next_due = wheel.next_due()
    if min_due is None:
        assert next_due is None
    else:
        assert next_due is not None
        assert min_due <= next_due <= min_due + model.tick_s


def _check_cross_advance_order(model: _Model) -> None:
    """If X fired in an earlier advance than Y and Y was pending then: X.due < Y.due + tick_s."""
    fired = [t for t in model.timers if t.fired_in is not None]
    for x in fired:
        for y in fired:
            assert x.fired_in is not None and y.fired_in is not None
            if x.fired_in < y.fired_in and y.added_before_advance <= x.fired_in:
                assert x.due < y.due + model.tick_s


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    tick_s=st.one_of(st.sampled_from([0.001, 0.1, 1.0, 7.3]), st.floats(0.001, 60.0)),
    start=st.one_of(st.just(0.0), st.floats(-1e5, 1e6)),
    slots=st.sampled_from([2, 3, 4, 16, 256]),
    ops=st.lists(_op, max_size=80),
)
def test_wheel_matches_heap_model(
    tick_s: float, start: float, slots: int, ops: list[tuple[str, object]]
) -> None:
    wheel: TimerWheel[int] = TimerWheel(tick_s, start, slots=slots)
    model = _Model(tick_s=tick_s, now=start)
    advances = 0
    for name, arg in ops:
        if name in ("add", "add_same_due"):
            if name == "add":
                assert isinstance(arg, float)
                due = model.now + arg * tick_s
            else:
                assert isinstance(arg, int)
                if not model.timers:
                    continue
                due = model.timers[arg % len(model.timers)].due
            seq = len(model.timers)
            handle = wheel.add(seq, due)
            model.add(_Timer(seq, due, seq, handle, advances))
        elif name == "cancel":
            assert isinstance(arg, int)
            if not model.timers:
                continue
            timer = model.timers[arg % len(model.timers)]
            was_pending = timer.seq in model.pending
            assert wheel.cancel(timer.handle) is was_pending
            assert timer.handle.pending is False
            if was_pending:
                timer.cancelled = True
                model.pending.discard(timer.seq)
                assert timer.handle.cancelled
        elif name == "advance":
            assert isinstance(arg, float)
            advances = _advance_and_check(wheel, model, model.now + arg * tick_s, advances)
        elif name == "advance_to_due":
            assert isinstance(arg, tuple)
            if not model.timers:
                continue
            timer = model.timers[arg[0] % len(model.timers)]
            # The exact boundaries: due, due + tick_s, and the float just below due + tick_s.
            late = timer.due + tick_s
            now = (timer.due, late, math.nextafter(late, -math.inf))[arg[1]]
            advances = _advance_and_check(wheel, model, now, advances)
        else:
            next_due = wheel.next_due()
            if next_due is None:
                continue
            before = len(model.pending)
            advances = _advance_and_check(wheel, model, max(model.now, next_due), advances)
            assert len(model.pending) < before, "advance(next_due()) must fire a timer"
        _check_state(wheel, model)
    # Drain: everything still pending fires once the clock passes the last due by a tick.
    last = max((model.timers[s].due for s in model.pending), default=model.now)
    advances = _advance_and_check(wheel, model, max(model.now, last + tick_s), advances)
    assert not model.pending
    assert len(wheel) == 0
    assert wheel.next_due() is None
    _check_cross_advance_order(model)
    fired_or_cancelled = [(t.fired_in is not None) != t.cancelled for t in model.timers]
    assert all(fired_or_cancelled)


# ---------------------------------------------------------------------------------------------
# Edge cases.


def test_due_in_past_fires_on_next_advance_even_at_same_now() -> None:
    wheel: TimerWheel[str] = TimerWheel(1.0, 100.0)
    wheel.add("old", 50.0)
    wheel.add("now", 100.0)
    assert wheel.next_due() == 50.0
    assert wheel.advance(100.0) == ["old", "now"]
    assert len(wheel) == 0


def test_fires_at_end_of_tick_not_before_due() -> None:
    wheel: TimerWheel[str] = TimerWheel(1.0, 0.0)
    wheel.add("a", 2.5)
    assert wheel.advance(2.4) == []
    # Due has passed but its tick has not ended: the wheel may wait until the tick ends.
    assert wheel.advance(2.6) == []
    assert wheel.next_due() == 3.0
    assert wheel.advance(3.0) == ["a"]


def test_far_future_beyond_several_wheel_spans() -> None:
    wheel: TimerWheel[str] = TimerWheel(0.5, 10.0, slots=4)
    span_s = 0.5 * 4
    dues = {"near": 11.0, "mid": 10.0 + span_s * 4**3 + 0.3, "far": 10.0 + span_s * 4**9 + 0.7}
    for key, due in dues.items():
        wheel.add(key, due)
    fired: list[tuple[float, str]] = []
    now = 10.0
    # Walk in uneven steps, checking nothing fires early or more than a tick late.
    step = 0.37
    while len(wheel):
        now += step
        step = min(step * 1.7, 5_000.0)
        for key in wheel.advance(now):
            assert dues[key] <= now
            fired.append((now, key))
    assert [k for _, k in fired] == ["near", "mid", "far"]


def test_far_future_single_jump_and_exact_boundary() -> None:
    wheel: TimerWheel[int] = TimerWheel(0.25, 0.0, slots=2)
    due = 1e9 + 0.1
    wheel.add(1, due)
    assert wheel.advance(due - 1e-6) == []
    # It may fire at its due (within its tick) and must by due + tick_s, exactly once.
    at_due = wheel.advance(due)
    assert at_due + wheel.advance(due + 0.25) == [1]
    assert len(wheel) == 0


def test_huge_jump_is_fast() -> None:
    wheel: TimerWheel[int] = TimerWheel(0.001, 0.0)
    for i in range(1000):
        wheel.add(i, i * 1e6)
    started = time.perf_counter()
    fired = wheel.advance(1e12)
    assert fired == list(range(1000))
    assert time.perf_counter() - started < 5.0


def test_cancel_twice_and_after_fire() -> None:
    wheel: TimerWheel[str] = TimerWheel(1.0, 0.0)
    a = wheel.add("a", 5.0)
    b = wheel.add("b", 5.0)
    assert wheel.cancel(a) is True
    assert a.cancelled and not a.pending
    assert wheel.cancel(a) is False
    assert len(wheel) == 1
    assert wheel.advance(6.0) == ["b"]
    assert wheel.cancel(b) is False
    assert not b.cancelled and not b.pending
    assert len(wheel) == 0


def test_cancel_past_due_timer_in_near_list() -> None:
    wheel: TimerWheel[str] = TimerWheel(1.0, 10.0)
    h = wheel.add("x", 1.0)
    assert wheel.cancel(h)
    assert wheel.advance(10.0) == []
    assert wheel.next_due() is None


def test_backwards_time_is_a_no_op() -> None:
    wheel: TimerWheel[str] = TimerWheel(1.0, 0.0)
    wheel.add("a", 5.0)
    assert wheel.advance(10.0) == ["a"]
    wheel.add("b", 11.0)
    assert wheel.advance(3.0) == []
    assert wheel.now == 10.0
    assert len(wheel) == 1
    assert wheel.advance(12.0) == ["b"]


def test_ties_fire_in_insertion_order() -> None:
    wheel: TimerWheel[int] = TimerWheel(1.0, 0.0, slots=2)
    for key in (3, 1, 2):
        wheel.add(key, 40.0)
    wheel.add(0, 39.5)
    wheel.advance(20.0)  # cascades the 40.0 timers through levels
    wheel.add(4, 40.0)
    assert wheel.advance(41.0) == [0, 3, 1, 2, 4]


def test_same_key_added_twice_fires_twice() -> None:
    wheel: TimerWheel[str] = TimerWheel(1.0, 0.0)
    wheel.add("k", 1.0)
    wheel.add("k", 2.0)
    assert wheel.advance(10.0) == ["k", "k"]


def test_next_due_tracks_add_cancel_and_advance() -> None:
    wheel: TimerWheel[str] = TimerWheel(1.0, 0.0)
    assert wheel.next_due() is None
    late = wheel.add("late", 100.2)
    assert wheel.next_due() == 101.0
    early = wheel.add("early", 7.5)
    assert wheel.next_due() == 8.0
    wheel.cancel(early)
    assert wheel.next_due() == 101.0
    wheel.cancel(late)
    assert wheel.next_due() is None


@pytest.mark.parametrize("tick_s", [0.0, -1.0, math.nan, math.inf])
def test_invalid_tick(tick_s: float) -> None:
    with pytest.raises(ValueError, match="tick_s"):
        TimerWheel(tick_s, 0.0)


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="slots"):
        TimerWheel(1.0, 0.0, slots=1)
    with pytest.raises(ValueError, match="now"):
        TimerWheel(1.0, math.nan)
    wheel: TimerWheel[str] = TimerWheel(1e-300, 0.0)
    with pytest.raises(ValueError, match="due"):
        wheel.add("x", math.inf)
    with pytest.raises(ValueError, match="too far"):
        wheel.add("x", 1e300)
    with pytest.raises(ValueError, match="now"):
        wheel.advance(math.nan)
    assert len(wheel) == 0


def test_handle_repr_and_views() -> None:
    wheel: TimerWheel[str] = TimerWheel(1.0, 0.0)
    h = wheel.add("k", 3.0)
    assert (h.key, h.due, h.pending) == ("k", 3.0, True)
    assert "pending" in repr(h)
    wheel.advance(5.0)
    assert "fired" in repr(h)


def test_memory_per_pending_timer() -> None:
    """About 72 bytes per pending timer on CPython 3.11 (the handle; keys and dues excluded)."""
    n = 50_000
    wheel: TimerWheel[int] = TimerWheel(0.1, 0.0)
    keys = list(range(n))
    dues = [1.0 + (i * 7919 % 360_000) * 0.1 for i in range(n)]  # spread over 10 hours
    handles: list[TimerHandle[int] | None] = [None] * n
    wheel.add(-1, 36_000.0)  # create the levels outside the measurement
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(n):
            handles[i] = wheel.add(keys[i], dues[i])
        per_timer = (tracemalloc.get_traced_memory()[0] - before) / n
    finally:
        tracemalloc.stop()
    print(f"timer wheel: {per_timer:.1f} bytes per pending timer")
    assert per_timer < 128
