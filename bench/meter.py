"""The per-run figures every measured run reports: CPU, memory, database round trips, WAL.

A `Meter` brackets one measured window. At the start it resets pg_stat_statements and notes the
CPU times of the system under test (the daemon or peer worker process), of PostgreSQL (postmaster,
backends, and backends that exited meanwhile) and of the sink, and the WAL position; at the end it
reads them again. `figures(deliveries)` turns the deltas into the report's per-delivery numbers:

  cpu_s / cpu_s_per_1000   daemon (or peer worker), postgres, total = the two together; the sink
                           separately
  peak_rss_mib             the highest VmRSS sampled every 0.25 s, or the process's VmHWM
  statements               pg_stat_statements calls by the SUT role in the run's database: every
                           top-level statement it sent (BEGIN and COMMIT included), i.e. its
                           round trips
  wal_bytes                pg_current_wal_lsn() delta (cluster-wide: includes producers' inserts
                           when they run in the same window)
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from bench.common import rss_bytes, tree_cpu_seconds
from bench.pg import SUT_ROLE

RSS_SAMPLE_S = 0.25

_STATEMENTS_SQL = """
SELECT coalesce(sum(s.calls), 0)::bigint AS calls,
       coalesce(sum(s.total_exec_time), 0)::float8 AS exec_ms,
       coalesce(sum(s.rows), 0)::bigint AS rows
FROM pg_stat_statements s
JOIN pg_database d ON d.oid = s.dbid
JOIN pg_roles r ON r.oid = s.userid
WHERE d.datname = $1 AND r.rolname = $2
"""

_TOP_SQL = """
SELECT left(regexp_replace(s.query, '\\s+', ' ', 'g'), 160) AS query, s.calls,
       round(s.total_exec_time::numeric, 1)::float8 AS total_ms,
       round((s.total_exec_time / greatest(s.calls, 1))::numeric, 3)::float8 AS mean_ms,
       s.rows, s.shared_blks_hit + s.shared_blks_read AS blocks
FROM pg_stat_statements s
JOIN pg_database d ON d.oid = s.dbid
JOIN pg_roles r ON r.oid = s.userid
WHERE d.datname = $1 AND r.rolname = $2
ORDER BY s.total_exec_time DESC
LIMIT $3
"""


@dataclass(slots=True)
class _Mark:
    at: float
    sut_cpu: float
    pg_cpu: float
    sink_cpu: float
    wal_lsn: str


@dataclass(slots=True)
class Meter:
    """Accounting of one measured window; `await meter.start()` ... `await meter.stop()`.

    `sut_pid` returns the pid of the process under test (it may change between construction and
    start); `sink_pids` the sink's master process(es).
    """

    monitor: asyncpg.Connection
    dbname: str
    pg_pid: int | None
    sut_pid: Callable[[], int | None]
    sink_pids: Callable[[], list[int]] = list
    top_statements: int = 8
    _start: _Mark | None = None
    _end: _Mark | None = None
    _rss_max: int = 0
    _sampler: asyncio.Task[None] | None = None
    _statements: dict[str, Any] = field(default_factory=dict)
    _top: list[dict[str, Any]] = field(default_factory=list)

    async def _mark(self) -> _Mark:
        lsn = await self.monitor.fetchval("SELECT pg_current_wal_lsn()::text")
        sut = self.sut_pid()
        return _Mark(
            time.monotonic(),
            tree_cpu_seconds(sut) if sut else 0.0,
            tree_cpu_seconds(self.pg_pid),
            sum(tree_cpu_seconds(p) for p in self.sink_pids()),
            str(lsn),
        )

    async def start(self) -> None:
        """Reset statement counters and note where everything stands."""
        await self.monitor.execute("SELECT pg_stat_statements_reset()")
        self._start = await self._mark()
        self._sampler = asyncio.create_task(self._sample_rss(), name="rss-sampler")

    async def _sample_rss(self) -> None:
        while True:
            pid = self.sut_pid()
            if pid:
                value = rss_bytes(pid)
                if value is not None and value > self._rss_max:
                    self._rss_max = value
            await asyncio.sleep(RSS_SAMPLE_S)

    async def stop(self) -> None:
        """Note where everything stands at the end of the window."""
        if self._sampler is not None:
            self._sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sampler
            self._sampler = None
        pid = self.sut_pid()
        if pid:
            value = rss_bytes(pid)
            if value is not None:
                self._rss_max = max(self._rss_max, value)
        self._end = await self._mark()
        row = await self.monitor.fetchrow(_STATEMENTS_SQL, self.dbname, SUT_ROLE)
        assert row is not None
        self._statements = dict(row)
        self._top = [
            dict(r)
            for r in await self.monitor.fetch(_TOP_SQL, self.dbname, SUT_ROLE, self.top_statements)
        ]

    async def wal_bytes(self) -> int | None:
        """WAL bytes written between start and stop."""
        if self._start is None or self._end is None:
            return None
        value = await self.monitor.fetchval(
            "SELECT pg_wal_lsn_diff($1::text::pg_lsn, $2::text::pg_lsn)::bigint",
            self._end.wal_lsn,
            self._start.wal_lsn,
        )
        return int(value) if value is not None else None

    async def figures(self, deliveries: int, peak_rss_hwm: int | None = None) -> dict[str, Any]:
        """The window's figures, per 1,000 deliveries and per delivery where it makes sense."""
        assert self._start is not None and self._end is not None
        s, e = self._start, self._end
        sut, pgc, sink = e.sut_cpu - s.sut_cpu, e.pg_cpu - s.pg_cpu, e.sink_cpu - s.sink_cpu
        wal = await self.wal_bytes()
        calls = int(self._statements.get("calls", 0))
        peak = max(self._rss_max, peak_rss_hwm or 0)

        def per_k(x: float) -> float | None:
            return round(x / deliveries * 1000, 4) if deliveries else None

        return {
            "window_s": round(e.at - s.at, 3),
            "cpu_s": {"sut": round(sut, 3), "postgres": round(pgc, 3), "sink": round(sink, 3)},
            "cpu_s_per_1000": {
                "sut": per_k(sut),
                "postgres": per_k(pgc),
                "total": per_k(sut + pgc),
                "sink": per_k(sink),
            },
            "cores_used": {
                "sut": round(sut / (e.at - s.at), 3) if e.at > s.at else None,
                "postgres": round(pgc / (e.at - s.at), 3) if e.at > s.at else None,
            },
            "peak_rss_mib": round(peak / 2**20, 1) if peak else None,
            "statements": calls,
            "statements_per_delivery": round(calls / deliveries, 4) if deliveries else None,
            "statement_exec_ms": round(float(self._statements.get("exec_ms", 0.0)), 1),
            "wal_bytes": wal,
            "wal_bytes_per_delivery": round(wal / deliveries, 1) if wal and deliveries else None,
            "top_statements": self._top,
        }
