"""AdaptiveLimit (hookd/limits.py): a semaphore whose size halves on back-pressure and grows back."""

from __future__ import annotations

import asyncio

import pytest

from hookd.limits import AdaptiveLimit


async def enter(limit: AdaptiveLimit, log: list[str], name: str, hold: asyncio.Event) -> None:
    async with limit:
        log.append(name)
        await hold.wait()


async def settle() -> None:
    """Let every ready task run until each waits on something outside the loop's ready queue."""
    for _ in range(5):
        await asyncio.sleep(0)


def test_ceiling_must_be_positive() -> None:
    with pytest.raises(ValueError):
        AdaptiveLimit(0)


def test_halving_never_goes_below_one() -> None:
    limit = AdaptiveLimit(10)
    seen = []
    for _ in range(6):
        limit.slow_down()
        seen.append(limit.limit)
    assert seen == [5, 2, 1, 1, 1, 1]
    assert limit.ceiling == 10


def test_grows_back_to_the_ceiling_about_one_per_round_of_successes() -> None:
    limit = AdaptiveLimit(8)
    for _ in range(4):
        limit.slow_down()
    assert limit.limit == 1
    successes = 0
    while limit.limit < 8:
        before = limit.limit
        limit.speed_up()
        successes += 1
        assert limit.limit in (before, before + 1)
        assert successes < 100
    # One step per `limit` successes (1 + 2 + ... + 7 = 28); float rounding may add one a step.
    assert 28 <= successes <= 28 + 7
    for _ in range(50):
        limit.speed_up()
    assert limit.limit == 8, "never beyond the ceiling"


def test_slow_down_forgets_partial_growth() -> None:
    limit = AdaptiveLimit(8)
    limit.slow_down()  # 4
    for _ in range(3):
        limit.speed_up()  # 3/4 of the way to 5
    limit.slow_down()  # 2
    limit.speed_up()
    assert limit.limit == 2, "credit from before the cut does not count"
    limit.speed_up()
    assert limit.limit == 3


async def test_admits_up_to_the_limit_then_fifo() -> None:
    limit = AdaptiveLimit(2)
    log: list[str] = []
    holds = {name: asyncio.Event() for name in "abcde"}
    async with asyncio.TaskGroup() as tg:
        for name in "abcde":
            tg.create_task(enter(limit, log, name, holds[name]))
            await settle()
        assert log == ["a", "b"] and limit.active == 2
        holds["b"].set()
        await settle()
        assert log == ["a", "b", "c"]
        holds["a"].set()
        await settle()
        assert log == ["a", "b", "c", "d"]
        holds["c"].set()
        holds["d"].set()
        holds["e"].set()
    assert log == list("abcde")
    assert limit.active == 0


async def test_newcomer_does_not_jump_the_queue() -> None:
    limit = AdaptiveLimit(1)
    log: list[str] = []
    holds = {name: asyncio.Event() for name in "abc"}
    async with asyncio.TaskGroup() as tg:
        tg.create_task(enter(limit, log, "a", holds["a"]))
        await settle()
        tg.create_task(enter(limit, log, "b", holds["b"]))
        await settle()
        # "a" leaves and "c" arrives in the same turn of the loop: "b" waited first.
        holds["a"].set()
        tg.create_task(enter(limit, log, "c", holds["c"]))
        await settle()
        assert log == ["a", "b"]
        holds["b"].set()
        holds["c"].set()
    assert log == ["a", "b", "c"]


async def test_a_smaller_limit_applies_as_slots_are_given_back() -> None:
    limit = AdaptiveLimit(4)
    log: list[str] = []
    holds = {name: asyncio.Event() for name in "abcdef"}
    async with asyncio.TaskGroup() as tg:
        for name in "abcdef":
            tg.create_task(enter(limit, log, name, holds[name]))
        await settle()
        assert log == list("abcd")
        limit.slow_down()  # 4 -> 2 while 4 are inside
        for name in "abc":
            holds[name].set()
            await settle()
        # Three left: only when fewer than 2 are inside may the next one enter.
        assert log == list("abcde") and limit.active == 2
        limit.speed_up()
        limit.speed_up()  # 2 -> 3: one more may enter at once
        await settle()
        assert log == list("abcdef") and limit.active == 3
        for name in "def":
            holds[name].set()
    assert limit.active == 0


async def test_cancelled_waiter_leaves_no_trace() -> None:
    limit = AdaptiveLimit(1)
    log: list[str] = []
    holds = {name: asyncio.Event() for name in "abc"}
    async with asyncio.TaskGroup() as tg:
        tg.create_task(enter(limit, log, "a", holds["a"]))
        await settle()
        b = tg.create_task(enter(limit, log, "b", holds["b"]))
        tg.create_task(enter(limit, log, "c", holds["c"]))
        await settle()
        b.cancel()
        await settle()
        assert b.cancelled()
        holds["a"].set()
        await settle()
        assert log == ["a", "c"] and limit.active == 1
        holds["c"].set()
    assert limit.active == 0
    # The limit is whole again: two quick entries in a row need no waiting.
    async with asyncio.timeout(1):
        async with limit:
            assert limit.active == 1
        async with limit:
            assert limit.active == 1


async def test_waiter_cancelled_just_after_being_handed_the_slot_passes_it_on() -> None:
    limit = AdaptiveLimit(1)
    log: list[str] = []
    holds = {name: asyncio.Event() for name in "abc"}
    async with asyncio.TaskGroup() as tg:
        tg.create_task(enter(limit, log, "a", holds["a"]))
        await settle()
        b = tg.create_task(enter(limit, log, "b", holds["b"]))
        tg.create_task(enter(limit, log, "c", holds["c"]))
        await settle()
        # "a" leaves, which hands the slot to "b"; "b" is cancelled before it can run.
        holds["a"].set()
        await asyncio.sleep(0)  # "a" runs its exit: b's future now holds the slot
        assert log == ["a"] and limit.active == 1, "handed to b, which has not run yet"
        b.cancel()
        await settle()
        assert b.cancelled()
        assert log == ["a", "c"], "the slot went on to the next waiter"
        assert limit.active == 1
        holds["c"].set()
    assert limit.active == 0


async def test_set_ceiling_lowers_the_limit_at_once_and_bounds_growth() -> None:
    limit = AdaptiveLimit(8)
    limit.set_ceiling(3)
    assert (limit.ceiling, limit.limit) == (3, 3)
    for _ in range(20):
        limit.speed_up()
    assert limit.limit == 3
    limit.set_ceiling(0)
    assert (limit.ceiling, limit.limit) == (1, 1)
