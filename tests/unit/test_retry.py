"""Unit tests for hookd.retry."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hookd.retry import DEFAULT_SCHEDULE_S, RetryPolicy

_rand = st.floats(0.0, 1.0, exclude_max=True)
_schedules = st.lists(st.floats(0.0, 1e6), min_size=1, max_size=12).map(tuple)
_policies = st.builds(
    RetryPolicy,
    schedule_s=_schedules,
    jitter=st.floats(0.0, 1.0, exclude_max=True),
    max_attempts=st.none() | st.integers(1, 30),
    max_age_s=st.none() | st.floats(0.0, 1e7),
)


def test_default_schedule_is_design_notes_item_13() -> None:
    assert DEFAULT_SCHEDULE_S == (0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)
    policy = RetryPolicy()
    assert policy.jitter == 0.2
    assert policy.attempt_limit == 8
    # rand = 0.5 means no jitter: the schedule itself.
    delays = [policy.next_delay_s(n, 0.0, 0.5) for n in range(8)]
    assert delays == list(DEFAULT_SCHEDULE_S)
    assert policy.next_delay_s(8, 0.0, 0.5) is None


def test_jitter_extremes() -> None:
    policy = RetryPolicy()
    assert policy.next_delay_s(2, 0.0, 0.0) == pytest.approx(240.0)
    assert policy.next_delay_s(2, 0.0, math.nextafter(1.0, 0.0)) == pytest.approx(360.0)
    assert policy.next_delay_s(0, 0.0, 0.99) == 0.0


def test_last_entry_repeats_beyond_schedule() -> None:
    policy = RetryPolicy(schedule_s=(1.0, 10.0), jitter=0.0, max_attempts=5)
    delays = [policy.next_delay_s(n, 0.0, 0.3) for n in range(6)]
    assert delays == [1.0, 10.0, 10.0, 10.0, 10.0, None]


def test_max_attempts_below_schedule_length_stops_early() -> None:
    policy = RetryPolicy(max_attempts=3, jitter=0.0)
    assert policy.next_delay_s(2, 0.0, 0.1) == 300.0
    assert policy.next_delay_s(3, 0.0, 0.1) is None


def test_age_limit() -> None:
    policy = RetryPolicy(jitter=0.0, max_age_s=3600.0)
    assert policy.next_delay_s(3, 1000.0, 0.5) == 1800.0  # lands at 2800 s
    assert policy.next_delay_s(3, 1800.0, 0.5) == 1800.0  # lands exactly at the limit
    assert policy.next_delay_s(3, 1801.0, 0.5) is None  # would land after it
    assert policy.next_delay_s(4, 0.0, 0.5) is None  # 2 h > 1 h


def test_age_limit_applies_to_the_jittered_delay() -> None:
    policy = RetryPolicy(schedule_s=(0.0, 100.0), jitter=0.2, max_age_s=100.0)
    assert policy.next_delay_s(1, 0.0, 0.0) == pytest.approx(80.0)
    assert policy.next_delay_s(1, 0.0, 0.75) is None  # 110 s


@settings(max_examples=300, deadline=None)
@given(policy=_policies, age_s=st.floats(0.0, 1e7), rands=st.lists(_rand, min_size=40, max_size=40))
def test_retries_always_end(policy: RetryPolicy, age_s: float, rands: list[float]) -> None:
    """Whatever the randomness and age, attempts stop by attempt_limit and stay stopped."""
    limit = policy.attempt_limit
    for attempts_made in range(limit, limit + 10):
        assert policy.next_delay_s(attempts_made, age_s, rands[attempts_made % 40]) is None
    # A simulated delivery: age grows by each delay; the loop ends within the limit.
    age = 0.0
    attempts = 1
    while (delay := policy.next_delay_s(attempts, age, rands[attempts % 40])) is not None:
        assert delay >= 0.0
        age += delay
        attempts += 1
        assert attempts <= limit
    if policy.max_age_s is not None:
        assert age <= policy.max_age_s


@settings(max_examples=300, deadline=None)
@given(policy=_policies, attempts_made=st.integers(0, 40), rand=_rand)
def test_delay_within_jitter_bounds(policy: RetryPolicy, attempts_made: int, rand: float) -> None:
    delay = policy.next_delay_s(attempts_made, 0.0, rand)
    if attempts_made >= policy.attempt_limit:
        assert delay is None
        return
    base = policy.schedule_s[min(attempts_made, len(policy.schedule_s) - 1)]
    jittered = base * (1 + policy.jitter * (2 * rand - 1))
    if delay is None:  # only the age limit can refuse a delivery this young
        assert policy.max_age_s is not None
        assert jittered > policy.max_age_s
        return
    assert delay == jittered
    # The formula's extremes, rand = 0 and rand -> 1, bound it (float ops are monotonic here).
    assert base * (1 - policy.jitter) <= delay <= base * (1 + policy.jitter)


@settings(max_examples=200, deadline=None)
@given(policy=_policies, attempts_made=st.integers(0, 40), age_s=st.floats(0.0, 1e7), rand=_rand)
def test_no_attempt_after_max_age(
    policy: RetryPolicy, attempts_made: int, age_s: float, rand: float
) -> None:
    delay = policy.next_delay_s(attempts_made, age_s, rand)
    if delay is not None and policy.max_age_s is not None:
        assert age_s + delay <= policy.max_age_s


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"schedule_s": ()}, "schedule_s"),
        ({"schedule_s": (1.0, -1.0)}, r"schedule_s\[1\]"),
        ({"schedule_s": (math.inf,)}, r"schedule_s\[0\]"),
        ({"schedule_s": (math.nan,)}, r"schedule_s\[0\]"),
        ({"schedule_s": ("5",)}, r"schedule_s\[0\]"),
        ({"schedule_s": "5"}, "schedule_s"),
        ({"jitter": -0.1}, "jitter"),
        ({"jitter": 1.0}, "jitter"),
        ({"jitter": math.nan}, "jitter"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"max_attempts": 2.0}, "max_attempts"),
        ({"max_attempts": True}, "max_attempts"),
        ({"max_age_s": -1.0}, "max_age_s"),
        ({"max_age_s": math.nan}, "max_age_s"),
    ],
)
def test_validation_names_the_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        RetryPolicy(**changes)
    with pytest.raises(ValueError, match=field):
        RetryPolicy().with_overrides(**changes)


def test_next_delay_argument_errors() -> None:
    policy = RetryPolicy()
    with pytest.raises(ValueError, match="attempts_made"):
        policy.next_delay_s(-1, 0.0, 0.5)
    with pytest.raises(ValueError, match="rand"):
        policy.next_delay_s(1, 0.0, 1.0)
    with pytest.raises(ValueError, match="rand"):
        policy.next_delay_s(1, 0.0, -0.1)
    with pytest.raises(ValueError, match="age_s"):
        policy.next_delay_s(1, math.nan, 0.5)


def test_with_overrides() -> None:
    base = RetryPolicy()
    custom = base.with_overrides(schedule_s=[0, 60], max_age_s=86_400.0)
    assert custom.schedule_s == (0.0, 60.0)  # list normalised to a tuple of floats
    assert custom.max_age_s == 86_400.0
    assert custom.jitter == base.jitter
    assert custom.attempt_limit == 2
    assert base == RetryPolicy()  # the original is untouched
    assert base.with_overrides() == base
    assert RetryPolicy(schedule_s=(0, 5)) == RetryPolicy(schedule_s=(0.0, 5.0))
    with pytest.raises(ValueError, match=r"unknown retry policy field.*max_retries"):
        base.with_overrides(max_retries=3)
