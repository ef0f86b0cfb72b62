"""A concurrency limit that shrinks on back-pressure and grows back on success (AIMD).

429, 503 and timeouts halve an endpoint's limit (never below 1); each success adds
`1 / limit`, so the limit grows by about one per round of successful requests, up to its ceiling.
"""

from __future__ import annotations

import asyncio
from collections import deque


class AdaptiveLimit:
    """An async context manager like a semaphore, whose capacity the caller can change."""

    __slots__ = ("_active", "_credit", "_waiters", "ceiling", "limit")

    def __init__(self, ceiling: int) -> None:
        if ceiling < 1:
            raise ValueError("ceiling must be at least 1")
        self.ceiling = ceiling
        self.limit = ceiling
        self._active = 0
        self._credit = 0.0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def active(self) -> int:
        """Slots in use now."""
        return self._active

    async def __aenter__(self) -> None:
        if self._active < self.limit and not self._waiters:
            self._active += 1
            return
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                # The slot was handed to us just as we were cancelled: pass it on.
                self._release()
            raise

    async def __aexit__(self, *exc: object) -> None:
        self._release()

    def _release(self) -> None:
        self._active -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self._active < self.limit:
            fut = self._waiters.popleft()
            if not fut.done():
                self._active += 1
                fut.set_result(None)

    def slow_down(self) -> None:
        """Halve the limit (never below 1)."""
        self.limit = max(1, self.limit // 2)
        self._credit = 0.0

    def speed_up(self) -> None:
        """Grow the limit by 1/limit towards its ceiling."""
        if self.limit >= self.ceiling:
            return
        self._credit += 1.0 / self.limit
        if self._credit >= 1.0:
            self._credit = 0.0
            self.limit += 1
            self._wake()

    def set_ceiling(self, ceiling: int) -> None:
        """Change the configured maximum (endpoint settings changed)."""
        self.ceiling = max(1, ceiling)
        self.limit = min(self.limit, self.ceiling) if self.limit else self.ceiling
        self._wake()
