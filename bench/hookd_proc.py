"""The daemon under test: `hookd run` as a child process, with its CPU time and peak memory.

The child is started with a generated TOML configuration, counts as ready when it logs
"hookd ready" on stderr, and is stopped with SIGTERM (it drains and should exit 0). Its output is
kept in `<workdir>/<name>.log`; warnings and errors in it are counted for the report.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import free_port
from bench.procs import Child

log = logging.getLogger("bench.hookd")

READY_LINE = "hookd ready"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0
"""SIGTERM → exit; the daemon's own shutdown grace is 10 s by default."""


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def to_toml(settings: Mapping[str, Mapping[str, Any]]) -> str:
    """A flat `[section] key = value` TOML document (enough for hookd's configuration)."""
    lines: list[str] = []
    for section, values in settings.items():
        lines.append(f"[{section}]")
        lines.extend(f"{k} = {_toml_value(v)}" for k, v in values.items())
        lines.append("")
    return "\n".join(lines)


def cli_settings() -> dict[str, dict[str, Any]]:
    """Settings every benchmark daemon and CLI call needs.

    The sink and the receivers are plain http on loopback. The SSRF guard stays on (as shipped);
    loopback is opened on purpose with `allow_cidrs`, and `hookd endpoint add` needs `allow_http`.
    """
    return {"security": {"allow_cidrs": ["127.0.0.0/8"], "allow_http": True}}


def write_cli_config(workdir: Path) -> Path:
    """A TOML file with `cli_settings()` for `hookd endpoint add --config`."""
    path = workdir / "hookd-cli.toml"
    path.write_text(to_toml(cli_settings()))
    return path


def parse_metrics(text: str) -> dict[str, float]:
    """Samples of a Prometheus text exposition: `name{labels}` → value (comments skipped)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        try:
            out[key] = float(value)
        except ValueError:
            continue
    return out


class HookdProcess(Child):
    """`python -m hookd run --dsn DSN --config FILE`; `async with HookdProcess(...) as daemon`.

    `settings` are merged over the benchmark's own (admin server on a free port, loopback opened
    in the SSRF guard). After entry, `ready_unix_s` is the wall-clock time at which "hookd ready"
    was logged.
    """

    def __init__(
        self, dsn: str, workdir: Path, name: str, settings: Mapping[str, Mapping[str, Any]]
    ) -> None:
        self.admin_port = free_port()
        merged: dict[str, dict[str, Any]] = {
            # The admin server's default port is fixed (9464): take a free one, so the daemon
            # neither collides with another hookd on this machine nor fails to start.
            "admin": {"enabled": True, "host": "127.0.0.1", "port": self.admin_port},
            "log": {"level": "info"},
            **cli_settings(),
        }
        for section, values in settings.items():
            merged.setdefault(section, {}).update(values)
        self.settings = merged
        config_path = workdir / f"{name}.toml"
        config_path.write_text(to_toml(merged))
        env = {k: v for k, v in os.environ.items() if k != "HOOKD_DSN"}
        super().__init__(
            name,
            [sys.executable, "-m", "hookd", "run", "--dsn", dsn, "--config", str(config_path)],
            workdir,
            ready_text=READY_LINE,
            env=env,
            start_timeout_s=START_TIMEOUT_S,
            stop_timeout_s=STOP_TIMEOUT_S,
        )

    async def metrics(self) -> dict[str, float]:
        """The daemon's Prometheus samples, keyed `name{labels}` (empty if the scrape fails)."""
        url = f"http://127.0.0.1:{self.admin_port}/metrics"
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as s,
                s.get(url) as r,
            ):
                text = await r.text()
        except (aiohttp.ClientError, OSError, TimeoutError):
            return {}
        return parse_metrics(text)

    async def wakeups(self) -> dict[str, int]:
        """hookd_wakeups_total by source (notify, timer, poll) so far."""
        samples = await self.metrics()
        out: dict[str, int] = {}
        for key, value in samples.items():
            m = re.fullmatch(r'hookd_wakeups_total\{source="(\w+)"\}', key)
            if m:
                out[m.group(1)] = int(value)
        return out
