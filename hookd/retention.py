"""The retention room: runs the history's maintenance step every `retention.check_interval_s`.

Each step (`Store.maintain_history`) creates the day partitions ahead and, when retention is on,
drops the days past `retention.delivered_keep_s` / `dead_letter_keep_s`; see docs/retention.md.
A step that fails for a transient reason (the database away, a table locked for longer than the
step's 1 s lock_timeout) is logged and tried again after `RETRY_S` seconds; nothing is lost by
waiting, since events of a day without a partition go to the default partition.
"""

from __future__ import annotations

import asyncio
import logging
import time

from hookd.config import RetentionConfig
from hookd.errors import Busy, StoreUnavailable
from hookd.metrics import Metrics
from hookd.store import Store

log = logging.getLogger("hookd.retention")

RETRY_S = 60.0
"""Seconds before a failed step is tried again (at most check_interval_s)."""

MAINTENANCE_LOCK_KEY = 114827819967586
"""The advisory lock key hookd.maintain_history takes, so one step runs at a time."""


class Retention:
    """Runs maintenance steps for one daemon until cancelled."""

    def __init__(self, store: Store, cfg: RetentionConfig, metrics: Metrics) -> None:
        self._store = store
        self._cfg = cfg
        self._metrics = metrics

    async def step(self) -> bool:
        """Run one step now; True when it completed (or another daemon's was running)."""
        cfg = self._cfg
        try:
            actions = await self._store.maintain_history(*cfg.keeps(), cfg.partitions_ahead)
        except (StoreUnavailable, Busy) as exc:
            self._metrics.db_errors.inc()
            log.warning("retention step failed (%s); trying again in %.0f s", exc, self._delay())
            return False
        except Exception:
            # A bug, not the database going away: deliveries go on, the step is tried again.
            self._metrics.internal_errors.inc()
            log.exception("retention step failed; trying again in %.0f s", self._delay())
            return False
        for a in actions:
            if a.action == "drop":
                self._metrics.history_partitions_dropped.inc()
                log.info(
                    "retention: dropped %s (%d rows kept, moved to its default)", a.relation, a.rows
                )
            elif a.action == "delete":
                log.info("retention: deleted %d rows past retention from %s", a.rows, a.relation)
            else:
                log.debug("retention: created %s", a.relation)
        self._metrics.retention_last_success.set(time.time())
        return True

    def _delay(self) -> float:
        return min(RETRY_S, self._cfg.check_interval_s)

    async def run(self) -> None:
        """Step now, then every check_interval_s (after a failure: sooner, see RETRY_S)."""
        while True:
            ok = await self.step()
            await asyncio.sleep(self._cfg.check_interval_s if ok else self._delay())
