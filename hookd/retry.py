"""Retry policy: how long to wait before a delivery's next attempt, and when to give up.

Pure: the caller supplies the delivery's age and a uniform random number, so every decision is
deterministic and testable. All durations are float seconds.

The default schedule is the common webhook schedule in docs/design-notes.md item 13: the first
attempt immediately, then retries after 5 s, 5 min, 30 min, 2 h, 5 h, 10 h and 10 h, each with
+/-20 % jitter so that deliveries failed together do not retry together.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

__all__ = ["DEFAULT_SCHEDULE_S", "RetryPolicy"]

DEFAULT_SCHEDULE_S: tuple[float, ...] = (0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)
"""Delays before attempts 1..8: immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h."""


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When a delivery is attempted again after a failure, and when it is given up.

    ``schedule_s[n]`` is the delay in seconds before attempt ``n + 1``, counted from the end of
    attempt ``n`` (``schedule_s[0]`` is the delay before the first attempt, after the event is
    created). When ``max_attempts`` exceeds ``len(schedule_s)`` the last entry repeats.

    Fields:
        schedule_s: non-empty delays in seconds, each finite and >= 0 (a list is accepted and
            stored as a tuple of floats).
        jitter: fraction in [0, 1); a delay ``d`` becomes ``d * (1 + jitter * (2 * rand - 1))``,
            i.e. uniform in ``[d * (1 - jitter), d * (1 + jitter))``.
        max_attempts: attempts in total, including the first; >= 1. None means ``len(schedule_s)``.
        max_age_s: no attempt is scheduled later than the delivery's creation plus this many
            seconds (>= 0); None means no age limit.

    Raises ValueError naming the field when a value is out of range.
    """

    schedule_s: tuple[float, ...] = DEFAULT_SCHEDULE_S
    jitter: float = 0.2
    max_attempts: int | None = None
    max_age_s: float | None = None

    def __post_init__(self) -> None:
        schedule = self.schedule_s
        if isinstance(schedule, str | bytes) or not isinstance(schedule, tuple | list):
            raise ValueError(f"schedule_s must be a tuple of seconds, got {schedule!r}")
        if not schedule:
            raise ValueError("schedule_s must not be empty")
        for index, delay in enumerate(schedule):
            if not _is_number(delay) or not math.isfinite(delay) or delay < 0:
                raise ValueError(
                    f"schedule_s[{index}] must be a finite number of seconds >= 0, got {delay!r}"
                )
        # Frozen: normalise through object.__setattr__ so that equal policies compare equal.
        object.__setattr__(self, "schedule_s", tuple(float(delay) for delay in schedule))
        if not _is_number(self.jitter) or not 0 <= self.jitter < 1:
            raise ValueError(f"jitter must be a fraction in [0, 1), got {self.jitter!r}")
        if self.max_attempts is not None and (
            not isinstance(self.max_attempts, int)
            or isinstance(self.max_attempts, bool)
            or self.max_attempts < 1
        ):
            raise ValueError(f"max_attempts must be an int >= 1 or None, got {self.max_attempts!r}")
        if self.max_age_s is not None and (
            not _is_number(self.max_age_s) or math.isnan(self.max_age_s) or self.max_age_s < 0
        ):
            raise ValueError(f"max_age_s must be seconds >= 0 or None, got {self.max_age_s!r}")

    @property
    def attempt_limit(self) -> int:
        """Attempts in total, including the first: ``max_attempts`` or ``len(schedule_s)``."""
        return len(self.schedule_s) if self.max_attempts is None else self.max_attempts

    def next_delay_s(self, attempts_made: int, age_s: float, rand: float) -> float | None:
        """Return the delay in seconds before the next attempt, or None to give up.

        ``attempts_made`` counts attempts already made, including the one that just failed (0
        asks for the delay before the first attempt). ``age_s`` is the seconds since the delivery
        was created. ``rand`` is uniform in [0, 1), drawn by the caller (e.g. ``random.random()``)
        so that this stays pure. Returns ``schedule_s[min(attempts_made, len - 1)]`` scaled by
        ``1 + jitter * (2 * rand - 1)``; None once ``attempts_made >= attempt_limit``, or when the
        jittered next attempt would come later than ``max_age_s`` after creation.

        Raises ValueError when ``attempts_made < 0``, ``age_s`` is not finite or ``rand`` is
        outside [0, 1).
        """
        if attempts_made < 0:
            raise ValueError(f"attempts_made must be >= 0, got {attempts_made!r}")
        if not math.isfinite(age_s):
            raise ValueError(f"age_s must be a finite number of seconds, got {age_s!r}")
        if not 0 <= rand < 1:
            raise ValueError(f"rand must be in [0, 1), got {rand!r}")
        if attempts_made >= self.attempt_limit:
            return None
        base = self.schedule_s[min(attempts_made, len(self.schedule_s) - 1)]
        delay = base * (1 + self.jitter * (2 * rand - 1))
        if self.max_age_s is not None and age_s + delay > self.max_age_s:
            return None
        return delay

    def with_overrides(self, **changes: Any) -> RetryPolicy:
        """Return a copy with some fields replaced, validated like a new policy.

        For per-endpoint overrides of the configured default. Raises ValueError for an unknown
        field name or an invalid value.
        """
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(changes.keys() - known)
        if unknown:
            raise ValueError(f"unknown retry policy field(s): {', '.join(unknown)}")
        return dataclasses.replace(self, **changes)
