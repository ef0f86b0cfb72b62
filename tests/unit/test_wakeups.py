"""The wake-up planner's protocol: linger with probes, give the lock back, look again, sleep.

The planner does no I/O of its own; these tests hand it a probe (a list of answers) and a lock
function that records what was asked of it, and check the order of those calls and why `idle()`
returned. Timings are short so the suite stays fast; assertions are about order, not speed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time

from hookd.config import DaemonConfig
from hookd.wakeups import WakePlanner

FAST = DaemonConfig(
    idle_linger_s=0.03, awake_poll_s=0.005, idle_recheck_s=0.02, poll_interval_s=0.2
)


class Script:
    """A probe that answers from a list (then False), and a lock that logs what it was asked."""

    def __init__(self, answers: list[bool]) -> None:
        self.answers = answers
        self.log: list[str] = []

    async def probe(self) -> bool:
        self.log.append("probe")
        return self.answers.pop(0) if self.answers else False

    async def lock(self, awake: bool) -> bool:
        self.log.append("take" if awake else "release")
        return awake


def planner(script: Script, cfg: DaemonConfig = FAST) -> WakePlanner:
    p = WakePlanner(cfg)
    p.set_awake = script.lock
    return p


def no_timer() -> float | None:
    return None


async def test_a_probe_that_finds_events_ends_the_linger_with_the_lock_kept() -> None:
    s = Script([False, True])
    p = planner(s)
    await p.working()
    await p.idle(s.probe, no_timer)
    assert p.last_reason == "probe"
    assert s.log == ["take", "probe", "probe"]  # never released: publishers send no NOTIFY


async def test_after_the_linger_the_lock_is_given_back_before_the_last_look() -> None:
    s = Script([])
    p = planner(s, dataclasses.replace(FAST, poll_interval_s=0.05))
    await p.working()
    async with asyncio.timeout(2):
        await p.idle(s.probe, no_timer)
    first_release = s.log.index("release")
    # Probes while lingering, then the release, then a look, then the recheck.
    assert s.log[1:first_release] == ["probe"] * (first_release - 1)
    assert first_release > 1
    assert s.log[first_release + 1 :] == ["probe", "probe"]
    assert p.last_reason == "poll"


async def test_an_event_committed_at_the_release_is_found_by_the_look_right_after() -> None:
    s = Script([False] * 100)
    p = planner(s)
    await p.working()

    async def probe() -> bool:
        # Finds work only once the lock has been given back (an event whose publisher tried the
        # lock just before the release and so sent no NOTIFY).
        s.log.append("probe")
        return "release" in s.log

    await p.idle(probe, no_timer)
    assert p.last_reason == "probe"
    assert s.log[-3:] == ["release", "probe", "take"]


async def test_a_notify_while_asleep_wakes_and_takes_the_lock() -> None:
    s = Script([])
    p = planner(s, dataclasses.replace(FAST, poll_interval_s=5.0))
    await p.working()
    idle = asyncio.create_task(p.idle(s.probe, no_timer))
    async with asyncio.timeout(2):
        await p.asleep.wait()
    p.notify()
    async with asyncio.timeout(2):
        await idle
    assert p.last_reason == "notify"
    assert s.log[-1] == "take"
    assert not p.asleep.is_set()


async def test_a_due_timer_ends_the_wait() -> None:
    s = Script([])
    p = planner(s, dataclasses.replace(FAST, poll_interval_s=5.0))
    due = time.monotonic() + 0.05
    await p.working()
    async with asyncio.timeout(2):
        await p.idle(s.probe, lambda: due)
    assert p.last_reason == "timer"
    assert time.monotonic() >= due


async def test_wake_ends_any_wait_at_once() -> None:
    s = Script([])
    p = planner(s, dataclasses.replace(FAST, idle_linger_s=5.0, awake_poll_s=5.0))
    await p.working()
    idle = asyncio.create_task(p.idle(s.probe, no_timer))
    p.wake()  # whether before or after the task's first step: the wait ends at once
    async with asyncio.timeout(1):
        await idle
    assert p.last_reason == "signal"
    assert "release" not in s.log
