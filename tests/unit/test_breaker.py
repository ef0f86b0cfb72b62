"""The circuit breaker (hookd/breaker.py): pure, time passed in."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hookd.breaker import BreakerSettings, BreakerState, CircuitBreaker

S = BreakerSettings(failure_threshold=3, cooldown_s=10.0, max_cooldown_s=35.0)


def opened(now: float = 0.0) -> CircuitBreaker:
    """A breaker that has just opened at `now`."""
    b = CircuitBreaker(S)
    for i in range(S.failure_threshold):
        assert b.allow(now)
        assert b.record(False, now) is (i == S.failure_threshold - 1)
    assert b.state is BreakerState.OPEN
    return b


def test_defaults_match_the_documented_ones() -> None:
    assert BreakerSettings() == BreakerSettings(10, 30.0, 600.0)


def test_closed_allows_everything_and_opens_at_the_threshold() -> None:
    b = CircuitBreaker(S)
    assert b.state is BreakerState.CLOSED
    assert not b.blocks_claims(0.0)
    assert b.record(False, 1.0) is False
    assert b.record(False, 2.0) is False
    assert b.state is BreakerState.CLOSED and b.allow(2.0)
    assert b.record(False, 3.0) is True
    assert b.state is BreakerState.OPEN
    assert b.open_until == pytest.approx(3.0 + S.cooldown_s)


def test_only_consecutive_failures_count() -> None:
    b = CircuitBreaker(S)
    for _ in range(5):
        b.record(False, 0.0)
        b.record(False, 0.0)
        b.record(True, 0.0)
    assert b.state is BreakerState.CLOSED


def test_open_blocks_until_the_cooldown_ends() -> None:
    b = opened(now=100.0)
    until = b.open_until
    assert until == pytest.approx(110.0)
    for now in (100.0, 105.0, until - 1e-6):
        assert b.blocks_claims(now)
        assert not b.allow(now)
    assert b.state is BreakerState.OPEN
    # Failures of attempts that were already under way do not extend the cool-down.
    assert b.record(False, 101.0) is False
    assert b.open_until == until
    assert not b.blocks_claims(until)


def test_one_probe_at_a_time_after_the_cooldown() -> None:
    b = opened()
    t = b.open_until
    assert b.allow(t)
    assert b.state is BreakerState.HALF_OPEN
    assert not b.allow(t)
    assert not b.allow(t + 100.0)
    assert b.blocks_claims(t + 100.0), "no claims while the probe is out"


def test_successful_probe_closes_and_resets() -> None:
    b = opened()
    t = b.open_until
    assert b.allow(t)
    assert b.record(True, t + 1.0) is False
    assert b.state is BreakerState.CLOSED
    assert not b.blocks_claims(t + 1.0) and b.allow(t + 1.0) and b.allow(t + 1.0)
    # The failure count starts again from zero.
    b.record(False, t + 2.0)
    b.record(False, t + 2.0)
    assert b.state is BreakerState.CLOSED
    assert b.record(False, t + 2.0) is True
    assert b.open_until == pytest.approx(t + 2.0 + S.cooldown_s), "the cool-down was reset"


def test_failed_probes_double_the_cooldown_up_to_the_maximum() -> None:
    b = opened()
    cooldowns = []
    for _ in range(4):
        t = b.open_until
        assert b.allow(t)
        assert b.record(False, t) is True
        assert b.state is BreakerState.OPEN
        cooldowns.append(b.open_until - t)
        assert not b.allow(t) and b.blocks_claims(t)
    assert cooldowns == pytest.approx([20.0, 35.0, 35.0, 35.0])


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["allow", "ok", "fail"]), st.floats(min_value=0.0, max_value=40.0)
        ),
        max_size=60,
    )
)
def test_invariants_under_any_sequence(ops: list[tuple[str, float]]) -> None:
    """Whatever happens: no attempt while open before the cool-down ends, one probe at a time,
    the cool-down never beyond the maximum, and claims blocked whenever an attempt would be
    refused for the breaker's sake."""
    b = CircuitBreaker(S)
    now = 0.0
    probes_out = 0
    for op, step in ops:
        now += step
        if op == "allow":
            state_before, until = b.state, b.open_until
            ok = b.allow(now)
            if state_before is BreakerState.OPEN and now < until:
                assert not ok
            if ok and b.state is BreakerState.HALF_OPEN:
                probes_out += 1
                assert probes_out == 1
            if not ok:
                assert b.blocks_claims(now)
        else:
            if b.state is BreakerState.HALF_OPEN:
                probes_out = 0
            b.record(op == "ok", now)
            if op == "ok":
                assert b.state is BreakerState.CLOSED
        if b.state is BreakerState.OPEN:
            # (now + cooldown) - now may come out a rounding error above the cool-down.
            assert b.open_until - now <= S.max_cooldown_s + 1e-9
