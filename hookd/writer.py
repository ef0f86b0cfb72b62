"""Buffered write-back of attempt outcomes: flushed on size or on a timer (docs/design-notes.md
item 3: batched writes are what make PostgreSQL cheap).

While the database is unavailable the buffer keeps every outcome and attempt row. It is bounded
without a cap of its own: each held delivery ends once, the process holds at most
`daemon.max_in_flight` deliveries, and the claim loop claims nothing while `failing` is set, so the
buffer never holds more than `max_in_flight` outcomes. Nothing is dropped: when the database is
back the whole buffer is written, oldest first. If the process is killed before that, the leases
expire and those deliveries are attempted again (at-least-once).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from hookd.errors import StoreUnavailable
from hookd.models import AttemptRecord, Outcome
from hookd.store import Store

log = logging.getLogger("hookd.writer")


class OutcomeWriter:
    """Collects outcomes and attempt rows; one task writes them in batches.

    `add()` is synchronous, so a finished attempt is recorded in memory with no await between the
    response and the bookkeeping. A failed write keeps the batch and tries again with backoff; if the
    process dies first, the leases expire and the deliveries are attempted again (at-least-once).

    `on_released` is called after a write that ended a delivery with an ordering key (`add(...,
    releases_key=True)`): the next delivery of that key may be claimed now, and not before the
    write, since claims see only what is committed.
    """

    def __init__(self, store: Store, flush_interval_s: float, flush_batch: int) -> None:
        self._store = store
        self._interval_s = flush_interval_s
        self._batch = flush_batch
        self._outcomes: list[Outcome] = []
        self._attempts: list[AttemptRecord] = []
        self._full = asyncio.Event()
        self._lock = asyncio.Lock()
        self._inflight: asyncio.Future[int] | None = None
        self._healthy = asyncio.Event()
        self._healthy.set()
        self._releases = False
        self.on_released: Callable[[], None] | None = None
        self.errors = 0

    @property
    def failing(self) -> bool:
        """True while the last write failed: outcomes wait in the buffer."""
        return not self._healthy.is_set()

    async def wait_healthy(self, timeout_s: float) -> bool:
        """Wait (at most `timeout_s`) until a write succeeds again; True if it did."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._healthy.wait()
        except TimeoutError:
            return False
        return True

    def __len__(self) -> int:
        return len(self._outcomes)

    def add(
        self, outcome: Outcome, attempt: AttemptRecord | None, *, releases_key: bool = False
    ) -> None:
        """Queue one outcome (and its attempt-log row, if an attempt was made).

        `releases_key`: the outcome ends a delivery with an ordering key (see `on_released`).
        """
        self._outcomes.append(outcome)
        self._releases = self._releases or releases_key
        if attempt is not None:
            self._attempts.append(attempt)
        if len(self._outcomes) >= self._batch:
            self._full.set()

    async def flush(self) -> None:
        """Write everything queued now. Raises StoreUnavailable if the write fails.

        The write is shielded from cancellation: once sent it runs to its end, and only a write
        that failed puts its batch back (so a batch is never written twice).
        """
        async with self._lock:
            if self._inflight is not None and not self._inflight.done():
                await asyncio.wait([self._inflight])
            outcomes, self._outcomes = self._outcomes, []
            attempts, self._attempts = self._attempts, []
            releases, self._releases = self._releases, False
            self._full.clear()
            if not outcomes and not attempts:
                return
            write = self._inflight = asyncio.ensure_future(self._store.record(outcomes, attempts))

            def keep_if_failed(task: asyncio.Future[int]) -> None:
                if task.cancelled() or task.exception() is not None:
                    # Put them back in front so nothing is lost; the caller decides about retrying.
                    self._outcomes[:0] = outcomes
                    self._attempts[:0] = attempts
                    self._releases = self._releases or releases
                elif releases and self.on_released is not None:
                    self.on_released()

            write.add_done_callback(keep_if_failed)
            try:
                await asyncio.shield(write)
            except StoreUnavailable:
                self._healthy.clear()
                raise
            self._healthy.set()

    async def run(self) -> None:
        """Flush every `flush_interval_s`, or at once when `flush_batch` outcomes wait; until cancelled."""
        backoff_s = self._interval_s
        while True:
            try:
                async with asyncio.timeout(backoff_s):
                    await self._full.wait()
            except TimeoutError:
                pass
            try:
                await self.flush()
                backoff_s = self._interval_s
            except StoreUnavailable as exc:
                self.errors += 1
                backoff_s = min(max(backoff_s * 2, 0.1), 5.0)
                log.warning(
                    "writing %d outcomes failed (%s); retrying in %.1f s", len(self), exc, backoff_s
                )
